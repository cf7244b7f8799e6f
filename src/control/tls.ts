/**
 * The TLS side of the control API that agent and coordinator share: the credentials both present,
 * the options both sides pin (TLS 1.3, the cluster CA only), and how a verified peer certificate
 * maps to a role. The certificates themselves are made by src/coordinator/pki.ts.
 */
import type tls from 'node:tls';
import { COORDINATOR_CN, HOST_NAME } from '../common/names.js';
import type { Peer } from './protocol.js';

export { COORDINATOR_CN };

export interface TlsCredentials {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** The one TLS version either side speaks. */
export const TLS_MIN_VERSION = 'TLSv1.3' as const;

/** Who a verified certificate belongs to: the coordinator, a host of the cluster, or nobody we know. */
export function peerOf(socket: tls.TLSSocket): Peer | null {
  const cn = socket.getPeerCertificate()?.subject?.CN;
  const name = Array.isArray(cn) ? undefined : cn;
  if (name === COORDINATOR_CN) return { role: 'coordinator', name };
  if (name && HOST_NAME.test(name)) return { role: 'host', name };
  return null;
}
