/**
 * The cluster file (YAML): the cluster CA, the coordinator's certificate, and every host with its
 * control address and its migration networks in preference order. Paths are relative to the file.
 *
 *   ca: { cert: ca.crt, key: ca.key }          # key: only needed by `ferry host init`
 *   coordinator: { cert: coordinator.crt, key: coordinator.key }
 *   hosts:
 *     a:
 *       control: 127.0.0.1:7001
 *       networks:                              # first that answers wins
 *         - { listen: 10.0.0.1:7101, advertise: 203.0.113.7:7101 }
 *         - 127.0.0.1:7102                     # shorthand: listen = advertise
 *
 * Every problem is an ERR_FERRY_INPUT naming the file, the line and column, and what is wrong.
 */
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { isMap, isScalar, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import { FerryError } from '../errors.js';
import { HOST_NAME, HOST_NAME_RULE } from '../common/names.js';
import { array, bad, FieldError, obj, optional, record, str, type Check } from '../common/validate.js';
import { addressProblem, type MigrationNetwork } from '../common/address.js';

export type { MigrationNetwork };
import { writeFileAtomic } from '../common/atomic-file.js';
import { sleep } from '../common/async.js';

export interface ClusterHost {
  name: string;
  control: string;
  networks: MigrationNetwork[];
}

export interface Cluster {
  /** Absolute path of the cluster file. */
  file: string;
  caCert: string;
  /** Absent when the operator keeps the CA key elsewhere. */
  caKey: string | null;
  coordinatorCert: string;
  coordinatorKey: string;
  hosts: Map<string, ClusterHost>;
}

export const CLUSTER_ENV = 'FERRY_CLUSTER';

/** The cluster file from `--cluster FILE` or FERRY_CLUSTER, as an absolute path. */
export function clusterPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const chosen = flag ?? env[CLUSTER_ENV];
  if (!chosen) {
    throw new FerryError('ERR_FERRY_USAGE', `no cluster file: pass --cluster FILE or set ${CLUSTER_ENV}`);
  }
  return path.resolve(chosen);
}

/** An address as the cluster file gives it. */
const address: Check<string> = (v, field) => {
  const problem = addressProblem(v);
  if (problem) bad(field, problem);
  return v as string;
};

/** A migration network: `{listen, advertise}`, or the shorthand of one address for both. */
const network: Check<MigrationNetwork> = (v, field) => {
  if (typeof v !== 'object' || v === null) {
    const listen = address(v, field);
    return { listen, advertise: listen };
  }
  const n = obj({ listen: address, advertise: optional(address) })(v, field);
  return { listen: n.listen, advertise: n.advertise ?? n.listen };
};

const file = str({ nonEmpty: true });
const checkClusterFile = obj({
  ca: obj({ cert: file, key: optional(file) }),
  coordinator: obj({ cert: file, key: file }),
  hosts: optional(
    record(
      str({ pattern: HOST_NAME, describe: `a host name (${HOST_NAME_RULE}: a DNS label)` }),
      obj({ control: address, networks: array(network, 1000, 1) }),
    ),
  ),
});

/** YAML's `key:` with nothing after it is a key not given. */
function withoutNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutNulls);
  if (typeof v !== 'object' || v === null) return v;
  return Object.fromEntries(
    Object.entries(v)
      .filter(([, x]) => x !== null)
      .map(([k, x]) => [k, withoutNulls(x)]),
  );
}

/** Where in the file a FieldError points: the bad value, the bad key, or the mapping that lacks the field. */
function locate(doc: Document, err: FieldError): Node | null {
  const path = [...err.field.matchAll(/([^.[\]]+)|\[(\d+)\]/g)].map((m) => (m[2] !== undefined ? Number(m[2]) : m[1]!));
  const nodeAt = (p: (string | number)[]): Node | null => {
    for (let n = p.length; n > 0; n--) {
      const node = doc.getIn(p.slice(0, n), true) as Node | undefined;
      if (node && typeof node === 'object') return node;
    }
    return doc.contents as Node | null;
  };
  if (err.at === 'missing') return nodeAt(path.slice(0, -1));
  if (err.at === 'key') {
    const parent = nodeAt(path.slice(0, -1));
    const pair = isMap(parent)
      ? parent.items.find((i) => isScalar(i.key) && String(i.key.value) === String(path[path.length - 1]))
      : undefined;
    if (pair) return pair.key as Node;
  }
  return nodeAt(path);
}

/** Parses and checks cluster file text; `file` is used for messages and to resolve relative paths. */
export function parseCluster(file: string, text: string): Cluster {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (node: Node | null) => lines.linePos(node?.range?.[0] ?? 0);
  const first = doc.errors[0];
  if (first) {
    const where = first.linePos?.[0] ?? { line: 1, col: 1 };
    const message = first.message.split(/ at line \d+|:\n/)[0];
    throw new FerryError('ERR_FERRY_INPUT', `${file}:${where.line}:${where.col}: not valid YAML: ${message}`);
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 16 });
  } catch (err) {
    // An alias to no anchor, or aliases expanding beyond reason.
    throw new FerryError('ERR_FERRY_INPUT', `${file}: not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  let c;
  try {
    c = checkClusterFile(withoutNulls(value), '');
  } catch (err) {
    if (!(err instanceof FieldError)) throw err;
    const { line, col } = at(locate(doc, err));
    throw new FerryError('ERR_FERRY_INPUT', `${file}:${line}:${col}: ${err.message}`);
  }
  const dir = path.dirname(file);
  const hosts = new Map<string, ClusterHost>();
  for (const [name, h] of c.hosts ?? []) hosts.set(name, { name, control: h.control, networks: h.networks });
  return {
    file,
    caCert: path.resolve(dir, c.ca.cert),
    caKey: c.ca.key ? path.resolve(dir, c.ca.key) : null,
    coordinatorCert: path.resolve(dir, c.coordinator.cert),
    coordinatorKey: path.resolve(dir, c.coordinator.key),
    hosts,
  };
}

export async function loadCluster(file: string): Promise<Cluster> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new FerryError(code === 'ENOENT' ? 'ERR_FERRY_NOT_FOUND' : 'ERR_FERRY_INPUT', `cannot read cluster file ${file}: ${code ?? err}`);
  }
  return parseCluster(file, text);
}

export function clusterHost(cluster: Cluster, name: string): ClusterHost {
  const host = cluster.hosts.get(name);
  if (!host) {
    const known = [...cluster.hosts.keys()].join(', ') || 'none';
    throw new FerryError('ERR_FERRY_NOT_FOUND', `no host "${name}" in ${cluster.file} (hosts: ${known})`);
  }
  return host;
}

/** An address as compared between hosts: lower-case, IPv6 without brackets. */
function addressKey(text: string): string {
  return text.toLowerCase().replace(/^\[(.*)\]:/, '$1:');
}

/** A wildcard listen address (every interface of its own machine) or port 0 (the kernel picks): no other host's address is the same. */
function local(text: string): boolean {
  const key = addressKey(text);
  return /:0$/.test(key) || /^(0\.0\.0\.0|::):/.test(key);
}

/** One address of a host being added, and the flag it came from. */
export interface NewHostAddress {
  address: string;
  flag: '--control' | '--network' | '--advertise';
}

/**
 * Why `host` cannot join `cluster` for its addresses (one that another host of the file already
 * uses as its control address or a migration address), or null. Two hosts on one address would
 * each reach the other's agent: a migration or a guest command would land on the wrong host.
 */
export function addressConflict(cluster: Cluster, host: ClusterHost): string | null {
  const taken = new Map<string, string>();
  for (const other of cluster.hosts.values()) {
    if (other.name === host.name) continue;
    const add = (a: string, what: string) => {
      if (!local(a) && !taken.has(addressKey(a))) taken.set(addressKey(a), `host ${other.name}'s ${what}`);
    };
    add(other.control, 'control address');
    for (const n of other.networks) {
      add(n.listen, 'migration network');
      add(n.advertise, 'migration network (advertised)');
    }
  }
  const mine: NewHostAddress[] = [{ address: host.control, flag: '--control' }];
  for (const n of host.networks) {
    mine.push({ address: n.listen, flag: '--network' });
    if (n.advertise !== n.listen) mine.push({ address: n.advertise, flag: '--advertise' });
  }
  for (const { address, flag } of mine) {
    const user = local(address) ? undefined : taken.get(addressKey(address));
    if (user) return `${flag} ${address} is already ${user} in ${cluster.file}: each host needs addresses of its own`;
  }
  return null;
}

/** The cluster file a fresh `ferry pki init` writes. */
export function initialClusterText(): string {
  return [
    '# ferry cluster file: written by `ferry pki init`, hosts added by `ferry host init`.',
    '# Paths are relative to this file. Migration networks are tried in order; `advertise` is the',
    '# address sources connect to (defaults to `listen`), so traffic can go through NAT or a relay.',
    'ca:',
    '  cert: ca.crt',
    '  key: ca.key',
    'coordinator:',
    '  cert: coordinator.crt',
    '  key: coordinator.key',
    'hosts: {}',
    '',
  ].join('\n');
}

/** Serializes concurrent writers of one cluster file (several `ferry host init` at once). */
async function withFileLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const lock = `${file}.lock`;
  const deadline = performance.now() + 10_000;
  for (;;) {
    try {
      await (await fs.open(lock, 'wx', 0o600)).close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const stat = await fs.stat(lock).catch(() => null);
      // eslint-disable-next-line no-restricted-properties -- a file's mtime is a date
      if (stat && Date.now() - stat.mtimeMs > 30_000) await fs.rm(lock, { force: true }); // left by a crash
      if (performance.now() > deadline) throw new FerryError('ERR_FERRY_TIMEOUT', `${file} is locked by another ferry (${lock})`);
      await sleep(50);
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rm(lock, { force: true });
  }
}

/**
 * Adds a host to the cluster file, keeping its comments and layout, atomically (temp, fsync,
 * rename). Refuses a name that is already there, and addresses another host uses.
 */
export async function addClusterHost(file: string, host: ClusterHost): Promise<void> {
  await withFileLock(file, async () => {
    const text = await fs.readFile(file, 'utf8');
    const cluster = parseCluster(file, text);
    if (cluster.hosts.has(host.name)) {
      throw new FerryError('ERR_FERRY_INPUT', `host "${host.name}" is already in ${file}`);
    }
    // Checked again under the lock: another `host init` may have taken an address meanwhile.
    const conflict = addressConflict(cluster, host);
    if (conflict) throw new FerryError('ERR_FERRY_INPUT', conflict);
    const doc = parseDocument(text);
    const networks = host.networks.map((n) => (n.advertise === n.listen ? { listen: n.listen } : { ...n }));
    const hosts = doc.get('hosts', true);
    if (!isMap(hosts) || hosts.items.length === 0) doc.set('hosts', doc.createNode({}));
    (doc.get('hosts', true) as { flow?: boolean }).flow = false;
    doc.setIn(['hosts', host.name], doc.createNode({ control: host.control, networks }));
    const out = doc.toString();
    parseCluster(file, out); // never write a file we would refuse to read
    await writeFileAtomic(file, out, 0o644);
  });
}

/** Removes a host from the cluster file, keeping the rest of it (comments, layout), atomically and under the same lock as addClusterHost. */
export async function removeClusterHost(file: string, name: string): Promise<void> {
  await withFileLock(file, async () => {
    const text = await fs.readFile(file, 'utf8');
    clusterHost(parseCluster(file, text), name);
    const doc = parseDocument(text);
    doc.deleteIn(['hosts', name]);
    const hosts = doc.get('hosts', true);
    if (!isMap(hosts) || hosts.items.length === 0) doc.set('hosts', doc.createNode({}));
    const out = doc.toString();
    parseCluster(file, out); // never write a file we would refuse to read
    await writeFileAtomic(file, out, 0o644);
  });
}

export function clusterExists(file: string): boolean {
  return existsSync(file);
}
