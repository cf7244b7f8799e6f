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
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import { FerryError } from '../errors.js';
import { addressProblem } from './address.js';
import { writeFileAtomic } from '../agent/atomic-file.js';

/** Host names: a DNS label, so it can be a certificate's SAN and a file name. */
export const HOST_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

export interface MigrationNetwork {
  /** Where the destination agent listens. */
  listen: string;
  /** What the coordinator hands to sources (NAT, relays); defaults to `listen`. */
  advertise: string;
}

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

class Checker {
  private readonly lines = new LineCounter();
  readonly doc: Document;

  constructor(readonly file: string, text: string) {
    this.doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, uniqueKeys: true });
    const first = this.doc.errors[0];
    if (first) {
      const where = first.linePos?.[0] ?? { line: 1, col: 1 };
      const message = first.message.split(/ at line \d+|:\n/)[0];
      throw new FerryError('ERR_FERRY_INPUT', `${file}:${where.line}:${where.col}: not valid YAML: ${message}`);
    }
  }

  fail(node: Node | null | undefined, field: string, problem: string): never {
    const offset = node?.range?.[0] ?? 0;
    const { line, col } = this.lines.linePos(offset);
    throw new FerryError('ERR_FERRY_INPUT', `${this.file}:${line}:${col}: ${field}: ${problem}`);
  }

  /** The child node at `key` of map `parent`; fails naming `field` when missing and required. */
  child(parent: Node, key: string, field: string, required: boolean): Node | null {
    if (!isMap(parent)) this.fail(parent, field.split('.').slice(0, -1).join('.') || 'file', 'must be a mapping');
    const node = parent.get(key, true) as Node | undefined;
    if (node === undefined || (isScalar(node) && node.value === null)) {
      if (required) this.fail(parent, field, 'is missing');
      return null;
    }
    return node;
  }

  string(node: Node, field: string): string {
    if (!isScalar(node) || typeof node.value !== 'string' || node.value === '') this.fail(node, field, 'must be a non-empty string');
    return node.value;
  }

  address(node: Node, field: string): string {
    const text = isScalar(node) ? node.value : undefined;
    const problem = addressProblem(text);
    if (problem) this.fail(node, field, problem);
    return text as string;
  }

  onlyKeys(node: Node, field: string, allowed: readonly string[]): void {
    if (!isMap(node)) this.fail(node, field, 'must be a mapping');
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : '?';
      if (!allowed.includes(key)) this.fail(pair.key as Node, `${field}.${key}`, `unknown key (allowed: ${allowed.join(', ')})`);
    }
  }
}

function parseNetwork(c: Checker, node: Node, field: string): MigrationNetwork {
  if (isScalar(node)) {
    const listen = c.address(node, field);
    return { listen, advertise: listen };
  }
  c.onlyKeys(node, field, ['listen', 'advertise']);
  const listen = c.address(c.child(node, 'listen', `${field}.listen`, true)!, `${field}.listen`);
  const adv = c.child(node, 'advertise', `${field}.advertise`, false);
  return { listen, advertise: adv ? c.address(adv, `${field}.advertise`) : listen };
}

function parseHost(c: Checker, name: string, node: Node): ClusterHost {
  const field = `hosts.${name}`;
  c.onlyKeys(node, field, ['control', 'networks']);
  const control = c.address(c.child(node, 'control', `${field}.control`, true)!, `${field}.control`);
  const nets = c.child(node, 'networks', `${field}.networks`, true)!;
  if (!isSeq(nets) || nets.items.length === 0) c.fail(nets, `${field}.networks`, 'must be a non-empty list of addresses');
  const networks = nets.items.map((n, i) => parseNetwork(c, n as Node, `${field}.networks[${i}]`));
  return { name, control, networks };
}

/** Parses and checks cluster file text; `file` is used for messages and to resolve relative paths. */
export function parseCluster(file: string, text: string): Cluster {
  const c: Checker = new Checker(file, text);
  const root = c.doc.contents as Node | null;
  if (!root || !isMap(root)) c.fail(root, 'file', 'must be a mapping with ca, coordinator and hosts');
  c.onlyKeys(root, 'file', ['ca', 'coordinator', 'hosts']);
  const dir = path.dirname(file);
  const filePath = (node: Node, field: string) => path.resolve(dir, c.string(node, field));

  const ca = c.child(root, 'ca', 'ca', true)!;
  c.onlyKeys(ca, 'ca', ['cert', 'key']);
  const caKeyNode = c.child(ca, 'key', 'ca.key', false);
  const co = c.child(root, 'coordinator', 'coordinator', true)!;
  c.onlyKeys(co, 'coordinator', ['cert', 'key']);

  const hosts = new Map<string, ClusterHost>();
  const hostsNode = c.child(root, 'hosts', 'hosts', false);
  if (hostsNode) {
    if (!isMap(hostsNode)) c.fail(hostsNode, 'hosts', 'must be a mapping of host name to host');
    for (const pair of hostsNode.items) {
      const keyNode = pair.key as Node;
      const name = isScalar(keyNode) ? String(keyNode.value) : '';
      if (!HOST_NAME.test(name)) c.fail(keyNode, `hosts.${name}`, 'a host name is lower-case letters, digits and dashes (a DNS label)');
      hosts.set(name, parseHost(c, name, pair.value as Node));
    }
  }
  return {
    file,
    caCert: filePath(c.child(ca, 'cert', 'ca.cert', true)!, 'ca.cert'),
    caKey: caKeyNode ? filePath(caKeyNode, 'ca.key') : null,
    coordinatorCert: filePath(c.child(co, 'cert', 'coordinator.cert', true)!, 'coordinator.cert'),
    coordinatorKey: filePath(c.child(co, 'key', 'coordinator.key', true)!, 'coordinator.key'),
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
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await (await fs.open(lock, 'wx', 0o600)).close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const stat = await fs.stat(lock).catch(() => null);
      if (stat && Date.now() - stat.mtimeMs > 30_000) await fs.rm(lock, { force: true }); // left by a crash
      if (Date.now() > deadline) throw new FerryError('ERR_FERRY_TIMEOUT', `${file} is locked by another ferry (${lock})`);
      await new Promise((r) => setTimeout(r, 50));
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
 * rename). Refuses a name that is already there.
 */
export async function addClusterHost(file: string, host: ClusterHost): Promise<void> {
  await withFileLock(file, async () => {
    const text = await fs.readFile(file, 'utf8');
    const cluster = parseCluster(file, text);
    if (cluster.hosts.has(host.name)) {
      throw new FerryError('ERR_FERRY_INPUT', `host "${host.name}" is already in ${file}`);
    }
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

export function clusterExists(file: string): boolean {
  return existsSync(file);
}
