/**
 * Network addresses as they appear in the cluster file and on the command line: `HOST:PORT`, with
 * HOST an IPv4 address, a DNS name, or an IPv6 address in brackets (`[::1]:7000`).
 */
import { FerryError } from '../errors.js';

export interface Address {
  host: string;
  port: number;
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

/** Why `text` is not an address, or null when it is one. `allowPortZero`: a listen address may let the kernel pick. */
export function addressProblem(text: unknown, allowPortZero = false): string | null {
  if (typeof text !== 'string') return 'must be a HOST:PORT string';
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) return `"${text}" is not HOST:PORT (IPv6 in brackets: [::1]:7000)`;
  const host = m[1] ?? m[2]!;
  if (m[2] !== undefined && !IPV4.test(host) && !HOSTNAME.test(host)) return `"${host}" is not an IPv4 address or host name`;
  const port = Number(m[3]);
  if (port > 65535 || (port === 0 && !allowPortZero)) return `port ${m[3]} is out of range (1-65535)`;
  return null;
}

/** `text` as host and port; ERR_FERRY_INPUT naming `what` when it is not an address. */
export function parseAddress(text: string, what = 'address', options: { allowPortZero?: boolean } = {}): Address {
  const problem = addressProblem(text, options.allowPortZero ?? false);
  if (problem) throw new FerryError('ERR_FERRY_INPUT', `${what}: ${problem}`);
  const i = text.lastIndexOf(':');
  return { host: text.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(text.slice(i + 1)) };
}

export function formatAddress(a: Address): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** One migration network of a host: where its agent listens, and what sources dial (NAT, relays). */
export interface MigrationNetwork {
  /** Where the destination agent listens. */
  listen: string;
  /** What the coordinator hands to sources (NAT, relays); defaults to `listen`. */
  advertise: string;
}
