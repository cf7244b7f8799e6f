/**
 * The coordinator's side of the control API: its credentials from the cluster file and a client
 * for any host of the cluster, checked against the host's name.
 */
import { promises as fs } from 'node:fs';
import { FerryError, toFerryError } from '../errors.js';
import { AgentClient } from '../control/client.js';
import type { TlsCredentials } from '../control/tls.js';
import { clusterHost, type Cluster } from './cluster.js';
import { checkCertificate } from './pki.js';
import { FERRY_VERSION } from '../common/version.js';

async function readNamed(file: string, what: string, clusterFile: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    throw new FerryError(
      'ERR_FERRY_NOT_FOUND',
      `cannot read the ${what} ${file} (named in ${clusterFile}): ${(err as NodeJS.ErrnoException).code}`,
    );
  }
}

/** The CA and the coordinator's certificate and key; refuses a certificate the CA did not sign or that is out of date. */
export async function coordinatorCredentials(cluster: Cluster): Promise<TlsCredentials> {
  const ca = await readNamed(cluster.caCert, 'CA certificate', cluster.file);
  const cert = await readNamed(cluster.coordinatorCert, 'coordinator certificate', cluster.file);
  const key = await readNamed(cluster.coordinatorKey, 'coordinator key', cluster.file);
  try {
    checkCertificate(cert, ca, `the coordinator certificate ${cluster.coordinatorCert}`);
  } catch (err) {
    // Our own files are wrong (another CA's certificate, expired): bad input, exit 2, and no host was asked.
    throw new FerryError('ERR_FERRY_INPUT', `${(err as Error).message} (named in ${cluster.file})`);
  }
  return { ca, cert, key };
}

/** A connected, hello'd client for host `name` of the cluster. */
export async function connectHost(cluster: Cluster, name: string, credentials?: TlsCredentials, timeoutMs?: number): Promise<AgentClient> {
  const host = clusterHost(cluster, name);
  return AgentClient.connect({
    address: host.control,
    host: host.name,
    credentials: credentials ?? (await coordinatorCredentials(cluster)),
    client: `ferry-cli ${FERRY_VERSION}`,
    ...(timeoutMs ? { timeoutMs } : {}),
  });
}

export type HostOutcome<T> = { ok: true; value: T } | { ok: false; error: FerryError };

/**
 * Runs `fn` against each named host at once, each with its own connection (closed afterwards).
 * Returns per host either the value or the error, so one unreachable host does not hide the others.
 */
export async function eachHost<T>(
  cluster: Cluster,
  names: readonly string[],
  fn: (client: AgentClient, host: string) => Promise<T>,
): Promise<Map<string, HostOutcome<T>>> {
  const credentials = await coordinatorCredentials(cluster);
  const results = await Promise.all(
    names.map(async (name): Promise<[string, HostOutcome<T>]> => {
      let client: AgentClient | null = null;
      try {
        client = await connectHost(cluster, name, credentials);
        return [name, { ok: true, value: await fn(client, name) }];
      } catch (err) {
        return [name, { ok: false, error: toFerryError(err) }];
      } finally {
        client?.close();
      }
    }),
  );
  const outcomes = new Map(results);
  const distrust = distrustedEverywhere(cluster, outcomes);
  if (distrust) throw distrust;
  return outcomes;
}

/**
 * Every host asked (two or more) failed its TLS handshake on trust: not one error per host (a screenful naming
 * each), but one line that points at the likely cause, a cluster file of another cluster.
 */
function distrustedEverywhere(cluster: Cluster, outcomes: Map<string, HostOutcome<unknown>>): FerryError | null {
  const names = [...outcomes.keys()];
  const distrusted = (o: HostOutcome<unknown>) => !o.ok && o.error.detail?.untrusted !== undefined;
  // One host asked: its own reason says more.
  if (names.length < 2 || ![...outcomes.values()].every(distrusted)) return null;
  const shown = names.length > 3 ? `${names.slice(0, 3).join(', ')} and ${names.length - 3} more` : names.join(', ');
  return new FerryError(
    'ERR_FERRY_REFUSED',
    `no agent of ${cluster.file} (${shown}) and this cluster's certificates trust each other: is --cluster or FERRY_CLUSTER the wrong file?`,
  );
}
