/** Migration network addresses as the cluster file spells them: 'host:port', '[v6 address]:port'. */
import { FerryError } from '../errors.js';

export interface NetworkAddress {
  host: string;
  port: number;
  /** 'host:port' as given, for messages and stats. */
  label: string;
}

export function parseNetwork(text: string): NetworkAddress {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(String(text));
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new FerryError('ERR_FERRY_INPUT', `network "${text}" is not host:port`);
  return { host: (m[1] ?? m[2])!, port, label: text };
}

export function formatNetwork(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
