/**
 * This CLI against an agent of an older control protocol (1, which took the migration key in JSON):
 * the old agent is a TLS peer of this test with host b's real certificate, answering the queries
 * protocol 1 had (hello, capabilities, guest queries) and recording every byte it is sent. Agent a
 * is real and runs the guest. What must hold: `ferry migrate` to the old host refuses before any key
 * exists and says to upgrade; no key, no migration request reaches the old agent; the guest runs on
 * where it was; `ferry probe` says the old host needs an upgrade; and AgentClient itself will not send
 * a key to it.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { loadCluster, type Cluster } from '../../src/coordinator/cluster.js';
import { connectHost, eachHost } from '../../src/coordinator/connect.js';
import type { Capabilities } from '../../src/control/protocol.js';
import { ferryAsync, ferryOk } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';
import { jsonLines } from '../support/json-output.js';
import { sleep } from '../../src/common/async.js';

const OLD_PROTOCOL = 1;
const OLD_VERSION = '0.1.0';

/** What a protocol-1 agent on host b answers; every byte sent to it, and the methods asked, are kept. */
class OldAgent {
  readonly received: Buffer[] = [];
  readonly methods: string[] = [];
  private readonly server: tls.Server;

  private constructor(server: tls.Server) {
    this.server = server;
  }

  static async start(dir: string, control: string, capabilities: Capabilities): Promise<OldAgent> {
    const server = tls.createServer({
      key: readFileSync(path.join(dir, 'host.key')),
      cert: readFileSync(path.join(dir, 'host.crt')),
      ca: readFileSync(path.join(dir, 'ca.crt')),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    });
    const agent = new OldAgent(server);
    server.on('secureConnection', (socket) => {
      let pending = '';
      socket.on('data', (chunk: Buffer) => {
        agent.received.push(Buffer.from(chunk));
        pending += chunk.toString('latin1');
        for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          const request = JSON.parse(line) as { id: number; method: string };
          agent.methods.push(request.method);
          socket.write(`${JSON.stringify({ id: request.id, ...agent.answer(request.method, capabilities) })}\n`);
        }
      });
      socket.on('error', () => {});
    });
    const port = Number(control.slice(control.lastIndexOf(':') + 1));
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', () => resolve()));
    assert.equal((server.address() as AddressInfo).port, port);
    return agent;
  }

  private answer(
    method: string,
    capabilities: Capabilities,
  ): { ok: true; result: unknown } | { ok: false; error: { code: string; message: string } } {
    switch (method) {
      case 'hello':
        return { ok: true, result: { protocol: OLD_PROTOCOL, minProtocol: OLD_PROTOCOL, agentVersion: OLD_VERSION, host: 'b' } };
      case 'capabilities':
        return { ok: true, result: capabilities };
      case 'guest.list':
        return { ok: true, result: { guests: [] } };
      case 'guest.get':
        return { ok: false, error: { code: 'ERR_FERRY_NOT_FOUND', message: 'no such guest on host b' } };
      default:
        return { ok: false, error: { code: 'ERR_FERRY_INPUT', message: `unknown method ${method}` } };
    }
  }

  /** Every byte received was a JSON request line: no secret trailer ever came. */
  assertOnlyJsonLines(): void {
    const all = Buffer.concat(this.received).toString('latin1');
    assert.ok(all.endsWith('\n'), 'a request line was left unfinished');
    for (const line of all.slice(0, -1).split('\n'))
      assert.doesNotThrow(() => JSON.parse(line), `not a JSON line: ${JSON.stringify(line.slice(0, 80))}`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

describe('e2e: this CLI against an agent of control protocol 1 (a real agent a, an old peer b)', function () {
  let cluster: TestCluster;
  let c: Cluster;
  let agentA: RunningAgent;
  let old: OldAgent;

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a');
    await cluster.addHost('b');
    agentA = await cluster.startAgent('a');
    c = await loadCluster(cluster.file);
    ferryOk(['vm', 'create', 'g1', '--host', 'a', '--memory', '32MiB', '--workload', 'idle'], cluster.env);
    // b answers capabilities as a real agent of its time would: a's own, as host b, protocol 1.
    const caps = (await eachHost(c, ['a'], (client) => client.call('capabilities', {}))).get('a')!;
    assert.ok(caps.ok);
    const b = c.hosts.get('b')!;
    const capabilities: Capabilities = {
      ...caps.value,
      host: 'b',
      protocol: OLD_PROTOCOL,
      agentVersion: OLD_VERSION,
      networks: b.networks,
      guests: 0,
      running: { outgoing: 0, incoming: 0 },
      queued: { outgoing: 0, incoming: 0 },
    };
    old = await OldAgent.start(cluster.hostDir('b'), b.control, capabilities);
  });
  after(async function () {
    await old?.close();
    await cluster?.stop();
  });

  async function guestOnA(): Promise<{ state: string; pid: number | null; migration: unknown }> {
    const r = (await eachHost(c, ['a'], (client) => client.call('guest.get', { name: 'g1' }))).get('a')!;
    assert.ok(r.ok, r.ok ? '' : r.error.message);
    return r.value as unknown as { state: string; pid: number | null; migration: unknown };
  }

  it('ferry migrate to the old host refuses before any key exists, says to upgrade it, and changes nothing', async function () {
    const before = await guestOnA();
    assert.equal(before.state, 'running');
    const r = await ferryAsync(['migrate', 'g1', '--to', 'b', '--json'], cluster.env);
    assert.equal(r.status, 1, r.stderr);
    const result = jsonLines(r.stdout).find((l) => l.type === 'result')!;
    assert.equal(result.ok, false);
    assert.equal(result.error.code, 'ERR_FERRY_REFUSED');
    assert.match(result.error.message, /host b runs ferry 0\.1\.0 \(control protocol 1\).*upgrade its agent/);
    // Nothing beyond queries reached the old agent: no migration request, no secret trailer.
    const queries = new Set(['hello', 'capabilities', 'guest.get', 'guest.list']);
    assert.ok(
      old.methods.every((m) => queries.has(m)),
      old.methods.join(', '),
    );
    old.assertOnlyJsonLines();
    // The guest runs on at a, the same process, with no migration behind it.
    const after = await guestOnA();
    assert.equal(after.state, 'running');
    assert.equal(after.pid, before.pid);
    assert.doesNotMatch(agentA.logs(), /"migration\.(prepare-incoming|start-outgoing)"/);
  });

  it('ferry probe marks the old host as needing an upgrade', async function () {
    const r = await ferryAsync(['probe', '--json'], cluster.env);
    assert.equal(r.status, 0, r.stderr);
    const hosts = new Map(
      jsonLines(r.stdout)
        .filter((l) => l.type === 'host')
        .map((l) => [l.host, l]),
    );
    assert.equal(hosts.get('b')!.protocol, OLD_PROTOCOL);
    assert.equal(hosts.get('b')!.upgradeNeeded, true);
    assert.equal(hosts.get('a')!.upgradeNeeded, false);
    const text = await ferryAsync(['probe'], cluster.env);
    assert.match(text.stdout, /0\.1\.0 \(upgrade\)/);
    const wide = await ferryAsync(['probe', '--wide'], cluster.env);
    assert.match(wide.stdout, /0\.1\.0 \(upgrade: CLI is /);
  });

  it('AgentClient will not send a migration key to a protocol-1 agent, even when asked directly', async function () {
    const client = await connectHost(c, 'b');
    try {
      assert.equal(client.agentIsOlder, true);
      const bytesBefore = Buffer.concat(old.received).length;
      const key = Buffer.alloc(40, 0x5a);
      await assert.rejects(
        client.call('migration.prepare-incoming', {} as never, { secret: key }),
        (err: { code?: string; message?: string }) =>
          err.code === 'ERR_FERRY_REFUSED' && /cannot take a migration key as raw bytes/.test(err.message ?? ''),
      );
      await sleep(100);
      assert.equal(Buffer.concat(old.received).length, bytesBefore, 'bytes were sent to the old agent');
    } finally {
      client.close();
    }
  });
});
