/**
 * The control API against real agent processes over real TLS: who gets in, what bad requests get,
 * and how the agent stops.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import tls from 'node:tls';
import { AgentClient } from '../../src/control/client.js';
import { MAX_REQUEST_BYTES, PROTOCOL_VERSION } from '../../src/control/protocol.js';
import { loadCluster } from '../../src/coordinator/cluster.js';
import { connectHost, coordinatorCredentials } from '../../src/coordinator/connect.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';
import { findSecret } from '../support/secrets.js';

/** Raw TLS with the given credentials: request lines (and raw trailers) in, the reply lines out until close. */
function rawExchange(
  address: string,
  options: tls.ConnectionOptions,
  lines: (string | Buffer)[],
  waitMs = 1500,
): Promise<{ replies: any[]; error: string | null; closed: boolean }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve) => {
    let data = '';
    let error: string | null = null;
    let closed = false;
    const s = tls.connect({ host, port, servername: 'a', minVersion: 'TLSv1.3', ...options });
    s.on('secureConnect', () => {
      for (const l of lines) s.write(l);
    });
    s.on('data', (d) => (data += d));
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    const finish = () => {
      s.destroy();
      resolve({
        replies: data
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l)),
        error,
        closed,
      });
    };
    s.on('close', () => {
      closed = true;
      finish();
    });
    setTimeout(finish, waitMs);
  });
}

describe('agent: control API over mutual TLS (real agents)', function () {
  let cluster: TestCluster;
  let other: TestCluster;
  let a: RunningAgent;
  let foreign: RunningAgent;

  before(async function () {
    cluster = TestCluster.create();
    other = TestCluster.create();
    await cluster.addHost('a', { sriov: true, maxOutgoing: 3 });
    await cluster.addHost('b');
    await other.addHost('a');
    a = await cluster.startAgent('a');
    foreign = await other.startAgent('a');
  });
  after(async function () {
    await cluster?.stop();
    await other?.stop();
  });

  it('admits the coordinator: hello and capabilities', async function () {
    const client = await connectHost(await loadCluster(cluster.file), 'a');
    try {
      assert.equal(client.agent.host, 'a');
      assert.equal(client.agent.protocol, PROTOCOL_VERSION);
      assert.equal(client.agentIsOlder, false);
      const caps = await client.call('capabilities', {});
      assert.equal(caps.encrypts, true);
      assert.equal(caps.hasSriov, true);
      assert.deepEqual(caps.limits, { outgoing: 3, incoming: 2 });
      assert.equal(caps.networks.length, 1);
      assert.ok(caps.freeMemoryBytes > 0);
      assert.equal(typeof caps.qemu, 'boolean');
      assert.equal(caps.cryptoBackend.length > 0, true);
    } finally {
      client.close();
    }
  });

  it('refuses a client certificate of another CA, before any handler runs', async function () {
    const ours = await loadCluster(cluster.file);
    const theirs = await loadCluster(other.file);
    const foreignCreds = await coordinatorCredentials(theirs);
    const admitted = () =>
      a
        .logs()
        .split('\n')
        .filter((l) => l.includes('"msg":"client connected"')).length;
    const before = admitted();
    await assert.rejects(
      AgentClient.connect({
        address: ours.hosts.get('a')!.control,
        host: 'a',
        credentials: { ...foreignCreds, ca: readFileSync(ours.caCert) },
      }),
      { code: 'ERR_FERRY_REFUSED', message: /refused our certificate|closed the connection during the handshake/ },
    );
    await a.waitForLog(/control connection refused/);
    assert.equal(admitted(), before, 'the foreign client never got past the handshake');
  });

  it('refuses a client without a certificate', async function () {
    const ours = await loadCluster(cluster.file);
    const r = await rawExchange(ours.hosts.get('a')!.control, { ca: readFileSync(ours.caCert) }, [
      `${JSON.stringify({ id: 1, method: 'hello', params: { protocol: 1, client: 'x' } })}\n`,
    ]);
    assert.deepEqual(r.replies, []);
    assert.ok(r.error, 'the connection failed');
  });

  it('refuses an agent of another CA, and an agent that is not the host asked for (CLI side)', async function () {
    const ours = await loadCluster(cluster.file);
    const creds = await coordinatorCredentials(ours);
    await assert.rejects(AgentClient.connect({ address: foreign.control, host: 'a', credentials: creds }), {
      code: 'ERR_FERRY_REFUSED',
      message: /certificate the cluster CA did not sign/,
    });
    await assert.rejects(AgentClient.connect({ address: a.control, host: 'b', credentials: creds }), {
      code: 'ERR_FERRY_REFUSED',
      message: /not host "b"/,
    });
  });

  it('answers a malformed request with a coded error and keeps the connection; changes nothing', async function () {
    const ours = await loadCluster(cluster.file);
    const creds = await coordinatorCredentials(ours);
    const before = readdirSync(path.join(cluster.hostDir('a'), 'ownership'));
    const hello = JSON.stringify({ id: 1, method: 'hello', params: { protocol: 1, client: 'raw' } });
    const r = await rawExchange(a.control, creds, [
      `${hello}\n`,
      'this is not json\n',
      `${JSON.stringify({ id: 2, method: 'migration.resolve', params: { migrationId: '../../etc/passwd' } })}\n`,
      `${JSON.stringify({ id: 3, method: 'nope', params: {} })}\n`,
      `${JSON.stringify({ id: 'x', method: 'capabilities' })}\n`,
      `${JSON.stringify({ id: 4, method: 'capabilities', params: { extra: true } })}\n`,
      `${JSON.stringify({ id: 5, method: 'capabilities', params: {} })}\n`,
    ]);
    const byId = (id: unknown) => r.replies.filter((x) => x.id === id);
    assert.equal(byId(1)[0].ok, true);
    assert.deepEqual(
      byId(null).map((x) => x.error.code),
      ['ERR_FERRY_INPUT', 'ERR_FERRY_INPUT'],
    );
    assert.equal(byId(2)[0].error.code, 'ERR_FERRY_INPUT');
    assert.match(byId(3)[0].error.message, /unknown method "nope"/);
    assert.match(byId(4)[0].error.message, /params\.extra: unknown field/);
    assert.equal(byId(5)[0].ok, true, 'the connection still works');
    assert.deepEqual(readdirSync(path.join(cluster.hostDir('a'), 'ownership')), before);
  });

  it('answers an oversized request with a coded error and closes the connection', async function () {
    const creds = await coordinatorCredentials(await loadCluster(cluster.file));
    const hello = JSON.stringify({ id: 1, method: 'hello', params: { protocol: 1, client: 'raw' } });
    const big = JSON.stringify({ id: 2, method: 'capabilities', params: { pad: 'x'.repeat(MAX_REQUEST_BYTES) } });
    const r = await rawExchange(a.control, creds, [`${hello}\n`, `${big}\n`], 5000);
    assert.equal(r.replies.length, 2);
    assert.equal(r.replies[1].id, null);
    assert.equal(r.replies[1].error.code, 'ERR_FERRY_INPUT');
    assert.match(r.replies[1].error.message, /longer than the limit/);
  });

  it('takes a migration key only as a raw trailer of the right size; refuses it in JSON, short, long, missing or stray; changes nothing', async function () {
    const creds = await coordinatorCredentials(await loadCluster(cluster.file));
    const snapshot = () =>
      ['guests', 'ownership'].map((d) =>
        readdirSync(path.join(cluster.hostDir('a'), d))
          .sort()
          .join(','),
      );
    const before = snapshot();
    const line = (o: object) => `${JSON.stringify(o)}\n`;
    const guest = {
      name: 'k1',
      driver: 'synthetic',
      memoryBytes: 16 * 2 ** 20,
      diskBytes: 0,
      workload: { kind: 'idle' },
      nic: 'virtio',
      encryptedMigration: 'opportunistic',
    };
    const incoming = { migrationId: 'm-key-1', mode: 'encrypted', streams: 2, guest, source: 'b' };
    const outgoing = {
      migrationId: 'm-key-2',
      mode: 'encrypted',
      streams: 2,
      guest: 'k1',
      destination: { host: 'b', control: '127.0.0.1:9' },
      networks: ['127.0.0.1:9'],
    };
    const trailers = [randomBytes(40), randomBytes(39), randomBytes(40), randomBytes(41)];
    const r = await rawExchange(a.control, creds, [
      line({ id: 1, method: 'hello', params: { protocol: PROTOCOL_VERSION, client: 'raw' } }),
      line({
        id: 2,
        method: 'migration.prepare-incoming',
        params: { ...incoming, key: trailers[0]!.subarray(0, 32).toString('base64'), nonce: trailers[0]!.subarray(32).toString('base64') },
      }),
      line({ id: 3, method: 'migration.prepare-incoming', params: incoming, secretBytes: 39 }),
      trailers[1]!,
      line({ id: 4, method: 'migration.prepare-incoming', params: incoming }),
      line({ id: 5, method: 'capabilities', params: {}, secretBytes: 40 }),
      trailers[2]!,
      line({ id: 6, method: 'migration.start-outgoing', params: outgoing, secretBytes: 41 }),
      trailers[3]!,
      line({ id: 7, method: 'capabilities', params: {} }),
    ]);
    const byId = (id: number) => r.replies.find((x) => x.id === id);
    assert.equal(byId(1).ok, true);
    for (const [id, message] of [
      [2, /params\.key: never goes in JSON/],
      [3, /secret trailer of 40 bytes.*not 39/],
      [4, /got none/],
      [5, /capabilities takes no secret trailer/],
      [6, /not 41/],
    ] as const) {
      assert.equal(byId(id).error?.code, 'ERR_FERRY_INPUT', `request ${id}`);
      assert.match(byId(id).error.message, message);
    }
    assert.equal(byId(7).ok, true, 'the stream stayed in step: each trailer was taken whole');
    assert.equal(r.closed, false);
    assert.deepEqual(snapshot(), before);
    for (const t of trailers)
      assert.deepEqual(
        findSecret([cluster.hostDir('a'), { name: 'agent log', text: a.logs() }, { name: 'replies', text: JSON.stringify(r.replies) }], t),
        [],
      );

    // A trailer larger than any request takes: where the next request starts is unknown, so the connection ends.
    const huge = await rawExchange(
      a.control,
      creds,
      [
        line({ id: 1, method: 'hello', params: { protocol: PROTOCOL_VERSION, client: 'raw' } }),
        line({ id: 2, method: 'migration.prepare-incoming', params: incoming, secretBytes: 100_000 }),
        randomBytes(100),
      ],
      5000,
    );
    assert.equal(huge.replies[1].id, null);
    assert.equal(huge.replies[1].error.code, 'ERR_FERRY_INPUT');
    assert.match(huge.replies[1].error.message, /secretBytes must be a whole number from 1 to 64/);
    assert.equal(huge.closed, true);
    assert.deepEqual(snapshot(), before);
  });

  it('requires hello first, and refuses a protocol older than it accepts', async function () {
    const creds = await coordinatorCredentials(await loadCluster(cluster.file));
    const first = await rawExchange(a.control, creds, [`${JSON.stringify({ id: 1, method: 'capabilities', params: {} })}\n`]);
    assert.equal(first.replies[0].error.code, 'ERR_FERRY_REFUSED');
    assert.match(first.replies[0].error.message, /first request must be hello/);
    const old = await rawExchange(a.control, creds, [
      `${JSON.stringify({ id: 1, method: 'hello', params: { protocol: 0, client: 'old' } })}\n`,
    ]);
    assert.equal(old.replies[0].error.code, 'ERR_FERRY_REFUSED');
    assert.match(old.replies[0].error.message, /upgrade ferry/);
  });

  it('answers resolve with not-committed, durably and finally, to hosts and the coordinator', async function () {
    const ours = await loadCluster(cluster.file);
    const dirB = cluster.hostDir('b');
    // Agent-to-agent: host b's own certificate, as a source agent asking its destination.
    const hostCreds = {
      ca: readFileSync(path.join(dirB, 'ca.crt')),
      cert: readFileSync(path.join(dirB, 'host.crt')),
      key: readFileSync(path.join(dirB, 'host.key')),
    };
    const asHost = await AgentClient.connect({ address: a.control, host: 'a', credentials: hostCreds });
    try {
      assert.deepEqual(await asHost.call('migration.resolve', { migrationId: 'm-test-1' }), {
        migrationId: 'm-test-1',
        decision: 'not-committed',
      });
    } finally {
      asHost.close();
    }
    const record = JSON.parse(readFileSync(path.join(cluster.hostDir('a'), 'ownership', 'm-test-1.decision.json'), 'utf8'));
    assert.equal(record.decision, 'not-committed');
    const coord = await connectHost(ours, 'a');
    try {
      assert.equal((await coord.call('migration.resolve', { migrationId: 'm-test-1' })).decision, 'not-committed');
    } finally {
      coord.close();
    }
  });

  it('drops data connections that do not open with a HELLO of a migration it expects', async function () {
    const network = JSON.parse(
      a
        .logs()
        .split('\n')
        .find((l) => l.includes('"msg":"agent ready"'))!,
    ).networks[0] as string;
    const [host, port] = [network.slice(0, network.lastIndexOf(':')), Number(network.slice(network.lastIndexOf(':') + 1))];
    const closedAfter = (bytes: Buffer) =>
      new Promise<string>((resolve) => {
        const s = net.connect({ host, port }, () => s.write(bytes));
        let got = '';
        s.on('data', (d) => (got += d.toString('hex')));
        s.on('error', () => {});
        s.on('close', () => resolve(got));
      });
    assert.equal(await closedAfter(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(4))), '', 'nothing is answered');
    await a.waitForLog(/"msg":"data connection dropped"/);
    const creds = await coordinatorCredentials(await loadCluster(cluster.file));
    const client = await AgentClient.connect({ address: a.control, host: 'a', credentials: creds });
    client.close(); // and the agent serves on
  });

  it('logs JSON lines and never a key', function () {
    const lines = a.logs().trim().split('\n');
    for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), l);
    for (const keyFile of ['host.key']) {
      const pem = readFileSync(path.join(cluster.hostDir('a'), keyFile), 'utf8');
      const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
      assert.deepEqual(findSecret([{ name: 'agent log', text: a.logs() }], der), []);
    }
  });

  it('runs --no-encryption agents that say they cannot encrypt', async function () {
    const b = await cluster.startAgent('b', ['--no-encryption']);
    const client = await connectHost(await loadCluster(cluster.file), 'b');
    try {
      assert.equal((await client.call('capabilities', {})).encrypts, false);
    } finally {
      client.close();
      assert.equal(await b.stop(), 0);
    }
  });

  it('stops cleanly on SIGTERM: exit 0, listener closed, clients told', async function () {
    const b = await cluster.startAgent('b');
    const client = await connectHost(await loadCluster(cluster.file), 'b');
    const code = await b.stop('SIGTERM');
    assert.equal(code, 0);
    assert.match(b.logs(), /"msg":"agent stopped"/);
    await assert.rejects(client.call('capabilities', {}), { code: 'ERR_FERRY_NETWORK' });
    client.close();
    await assert.rejects(connectHost(await loadCluster(cluster.file), 'b'), { code: 'ERR_FERRY_NETWORK', message: /ECONNREFUSED/ });
  });
});
