/**
 * Property: a malformed request to a real agent's control API, of any method, gets a coded error and
 * changes nothing. Each request is a valid one with one mutation — a field added where it does not
 * belong, or one value (at any depth) replaced by a value of another JSON type — sent over one real
 * mutual-TLS connection, keyed methods with a well-formed key trailer, so that only the mutation can
 * be what refuses them. Afterwards the connection still works, the agent's records (host, guests,
 * ownership) are byte for byte as before, and the guest runs on in the same process.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import tls from 'node:tls';
import fc from 'fast-check';
import { ERROR_CODES } from '../../src/errors.js';
import { KEYED_METHODS, PROTOCOL_VERSION, type Method } from '../../src/control/protocol.js';
import { loadCluster } from '../../src/coordinator/cluster.js';
import { coordinatorCredentials } from '../../src/coordinator/connect.js';
import { ferryOk } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const config = {
  name: 'fz1',
  driver: 'synthetic',
  memoryBytes: 16 * 2 ** 20,
  diskBytes: 0,
  workload: { kind: 'kv', getsPerSecond: 10, setsPerSecond: 5 },
  nic: 'virtio',
  encryptedMigration: 'required',
};
const channel = { migrationId: 'fz-m1', mode: 'encrypted', streams: 2, maxBytesPerSecond: 1_000_000 };

/** A valid request of every method but hello (which a connection says once). */
const VALID: { [M in Exclude<Method, 'hello'>]: Record<string, Json> } = {
  capabilities: {},
  'guest.create': { config },
  'guest.list': {},
  'guest.get': { name: 'g1' },
  'guest.set': { name: 'g1', encryptedMigration: 'required' },
  'guest.destroy': { name: 'g1' },
  'guest.console': { name: 'g1', offset: 0, follow: false },
  'migration.resolve': { migrationId: 'fz-m1' },
  'migration.prepare-incoming': { ...channel, guest: config, source: 'b', startTimeoutMs: 5000, sourceControl: '127.0.0.1:9' },
  'migration.start-outgoing': {
    ...channel,
    guest: 'g1',
    destination: { host: 'b', control: '127.0.0.1:9' },
    networks: ['127.0.0.1:9'],
    maxDowntimeMs: 500,
    timeoutMs: 60_000,
    autoConverge: true,
    verify: false,
    commitTimeoutMs: 5000,
  },
  'migration.status': { migrationId: 'fz-m1' },
  'migration.list': {},
  'crypto.measure': {},
  'migration.abort': { migrationId: 'fz-m1' },
  'migration.cancel': { guest: 'g1', migrationId: 'fz-m1' },
  'migration.settle': { migrationId: 'fz-m1', decision: 'not-committed' },
  'migration.waiting': { guest: 'g1' },
  'migration.outgoing': { guest: 'g1' },
  'migration.follow': { migrationId: 'fz-m1' },
  'migration.fence': { migrationId: 'fz-m1' },
  'migration.decided': { migrationId: 'fz-m1', decision: 'committed' },
  'migration.fenced': { migrationId: 'fz-m1' },
};
const METHODS = Object.keys(VALID) as (keyof typeof VALID)[];

/** Every place in `v` a mutation can go: the path to each object (for a new field) and to each value. */
function places(v: Json, at: (string | number)[] = []): { objects: (string | number)[][]; values: (string | number)[][] } {
  const out = { objects: [] as (string | number)[][], values: [] as (string | number)[][] };
  if (at.length > 0) out.values.push(at);
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      const p = places(x, [...at, i]);
      out.objects.push(...p.objects);
      out.values.push(...p.values);
    });
  } else if (v !== null && typeof v === 'object') {
    out.objects.push(at);
    for (const [k, x] of Object.entries(v)) {
      const p = places(x, [...at, k]);
      out.objects.push(...p.objects);
      out.values.push(...p.values);
    }
  }
  return out;
}

const kind = (v: Json): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

/** A JSON value of another type than `v` (null never: absent and null are one for some fields). */
function otherType(v: Json): fc.Arbitrary<Json> {
  const all: [string, fc.Arbitrary<Json>][] = [
    ['string', fc.string({ maxLength: 20 })],
    ['number', fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }))],
    ['boolean', fc.boolean()],
    ['array', fc.array(fc.oneof(fc.integer(), fc.string({ maxLength: 5 })), { maxLength: 3 })],
    ['object', fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), fc.integer(), { maxKeys: 2 })],
  ];
  return fc.oneof(...all.filter(([k]) => k !== kind(v)).map(([, a]) => a));
}

function withAt(root: Json, at: (string | number)[], change: (parent: any, key: string | number) => void): Json {
  const copy = structuredClone(root) as any;
  let parent = copy;
  for (const k of at.slice(0, -1)) parent = parent[k];
  change(parent, at[at.length - 1]!);
  return copy;
}

interface Mutated {
  method: keyof typeof VALID;
  params: Json;
  what: string;
}

const mutated: fc.Arbitrary<Mutated> = fc.constantFrom(...METHODS).chain((method) => {
  const valid = VALID[method];
  const { objects, values } = places(valid);
  const addField = fc
    .tuple(fc.constantFrom(...objects), fc.string({ minLength: 1, maxLength: 12 }), fc.jsonValue({ maxDepth: 1 }))
    .filter(([at, name]) => {
      let o: any = valid;
      for (const k of at) o = o[k];
      return !Object.prototype.hasOwnProperty.call(o, name);
    })
    .map(([at, name, value]): Mutated => ({
      method,
      params:
        at.length === 0
          ? { ...valid, [name]: value as Json }
          : withAt(valid, at, (parent, key) => (parent[key] = { ...parent[key], [name]: value })),
      what: `field ${JSON.stringify(name)} added at params${at.map((k) => `.${k}`).join('')}`,
    }));
  if (values.length === 0) return addField;
  const retype = fc.constantFrom(...values).chain((at) => {
    let old: any = valid;
    for (const k of at) old = old[k];
    return otherType(old).map((value): Mutated => ({
      method,
      params: withAt(valid, at, (parent, key) => (parent[key] = value)),
      what: `params${at.map((k) => `.${k}`).join('')}: ${kind(old)} replaced by ${JSON.stringify(value)}`,
    }));
  });
  return fc.oneof(addField, retype);
});

/** One mutual-TLS connection: a request out, its reply back (events skipped). */
class Connection {
  private buffered = '';
  private waiting: ((line: any) => void) | null = null;
  private readonly lines: any[] = [];
  private nextId = 1;
  closed = false;

  private constructor(private readonly socket: tls.TLSSocket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buffered += d;
      for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
        const line = JSON.parse(this.buffered.slice(0, nl));
        this.buffered = this.buffered.slice(nl + 1);
        if (line.event !== undefined) continue;
        if (this.waiting) {
          const w = this.waiting;
          this.waiting = null;
          w(line);
        } else this.lines.push(line);
      }
    });
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => {});
  }

  static open(address: string, options: tls.ConnectionOptions): Promise<Connection> {
    const i = address.lastIndexOf(':');
    return new Promise((resolve, reject) => {
      const s = tls.connect({
        host: address.slice(0, i),
        port: Number(address.slice(i + 1)),
        servername: 'a',
        minVersion: 'TLSv1.3',
        ...options,
      });
      s.once('secureConnect', () => resolve(new Connection(s)));
      s.once('error', reject);
    });
  }

  request(method: string, params: Json, secret?: Buffer): Promise<any> {
    const id = this.nextId++;
    const line = `${JSON.stringify({ id, method, params, ...(secret ? { secretBytes: secret.length } : {}) })}\n`;
    this.socket.write(secret ? Buffer.concat([Buffer.from(line), secret]) : line);
    const queued = this.lines.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply to ${method} within 15 s`)), 15_000);
      this.waiting = (l) => {
        clearTimeout(timer);
        resolve(l);
      };
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

describe('agent: malformed control requests, generated (real agent, real TLS)', function () {
  let cluster: TestCluster;
  let a: RunningAgent;
  let conn: Connection;

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a');
    await cluster.addHost('b');
    a = await cluster.startAgent('a');
    ferryOk(['vm', 'create', 'g1', '--host', 'a', '--memory', '16MiB', '--workload', 'idle'], cluster.env);
    conn = await Connection.open(a.control, await coordinatorCredentials(await loadCluster(cluster.file)));
    const hello = await conn.request('hello', { protocol: PROTOCOL_VERSION, client: 'fuzz' });
    assert.equal(hello.ok, true);
  });
  after(async function () {
    conn?.close();
    await cluster?.stop();
  });

  /** The agent's records, byte for byte: host.json, guests/*.json and the guest directories, ownership/. */
  function records(): string {
    const dir = cluster.hostDir('a');
    const out = [readFileSync(path.join(dir, 'host.json'), 'utf8')];
    for (const sub of ['guests', 'ownership']) {
      for (const f of readdirSync(path.join(dir, sub)).sort())
        out.push(`${sub}/${f}: ${f.endsWith('.json') ? readFileSync(path.join(dir, sub, f), 'utf8') : '(dir)'}`);
    }
    return out.join('\n');
  }

  it('answers each with a coded error and changes nothing (every method, 300 requests)', async function () {
    this.timeout(180_000);
    const before = records();
    const guest = await conn.request('guest.get', { name: 'g1' });
    assert.equal(guest.result.state, 'running');
    await fc.assert(
      fc.asyncProperty(mutated, async (m) => {
        const secret = m.method in KEYED_METHODS ? randomBytes(KEYED_METHODS[m.method as keyof typeof KEYED_METHODS]) : undefined;
        const reply = await conn.request(m.method, m.params, secret);
        assert.equal(reply.ok, false, `${m.method} with ${m.what} was taken: ${JSON.stringify(reply).slice(0, 300)}`);
        assert.ok(
          Object.prototype.hasOwnProperty.call(ERROR_CODES, reply.error.code),
          `${m.method} with ${m.what}: uncoded error ${JSON.stringify(reply.error)}`,
        );
        assert.equal(typeof reply.error.message, 'string');
        assert.ok(reply.error.message.length > 0 && reply.error.message.length < 2000, reply.error.message);
        if (secret) assert.ok(!reply.error.message.includes(secret.toString('hex').slice(0, 16)), 'the key reached an error message');
      }),
      { numRuns: 300 },
    );
    assert.equal(conn.closed, false, 'the connection was closed');
    assert.equal((await conn.request('capabilities', {})).ok, true, 'the connection is still in step');
    assert.equal(records(), before, "the agent's records changed");
    const after = await conn.request('guest.get', { name: 'g1' });
    assert.equal(after.result.state, 'running');
    assert.equal(after.result.pid, guest.result.pid);
    assert.equal(a.process.exitCode, null, 'the agent exited');
  });
});
