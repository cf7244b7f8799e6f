/**
 * Migration networks as the channel dials and binds them: an address of the one grammar
 * (src/common/address.ts), with its text kept for messages and stats.
 */
import { formatAddress, parseAddress } from '../common/address.js';

export interface NetworkAddress {
  host: string;
  port: number;
  /** 'host:port' as given, for messages and stats. */
  label: string;
}

/** `listen`: an address to bind, where port 0 lets the kernel pick. */
export function parseNetwork(text: string, options: { listen?: boolean } = {}): NetworkAddress {
  return { ...parseAddress(text, 'network', { allowPortZero: options.listen ?? false }), label: text };
}

export function formatNetwork(host: string, port: number): string {
  return formatAddress({ host, port });
}
