/** Migration requests an agent refuses before anything starts: each with its code, nothing changed. */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { waitUntil } from '../support/wait.js';
import path from 'node:path';
import { AgentClient } from '../../src/control/client.js';
import type { PrepareIncomingParams, StartOutgoingParams } from '../../src/control/protocol.js';
import { loadCluster, type Cluster } from '../../src/coordinator/cluster.js';
import { connectHost } from '../../src/coordinator/connect.js';
import { ferryOk } from '../support/cli.js';
import { TestCluster } from '../support/cluster.js';

describe('agent: migration requests refused up front (real agents)', function () {
  let cluster: TestCluster;
  let c: Cluster;
  let coordinator: AgentClient;
  let plainOnly: AgentClient;

  const channel = { migrationId: 'm-refused-1', mode: 'encrypted' as const, streams: 2 };
  /** Key and nonce as the secret trailer every keyed call carries. */
  const keyed = { secret: Buffer.concat([Buffer.alloc(32, 7), Buffer.alloc(8, 9)]) };
  const guest = {
    name: 'r1',
    driver: 'synthetic' as const,
    memoryBytes: 16 * 2 ** 20,
    diskBytes: 0,
    workload: { kind: 'idle' as const },
    nic: 'virtio' as const,
    encryptedMigration: 'opportunistic' as const,
  };
  const incoming = (extra: Partial<PrepareIncomingParams> = {}): PrepareIncomingParams => ({ ...channel, guest, source: 'b', ...extra });
  const outgoing = (extra: Partial<StartOutgoingParams> = {}): StartOutgoingParams => ({
    ...channel,
    guest: 'r1',
    destination: { host: 'b', control: c.hosts.get('b')!.control },
    networks: ['127.0.0.1:9'],
    ...extra,
  });
  const snapshot = (host: string) =>
    ['guests', 'ownership'].map((d) =>
      readdirSync(path.join(cluster.hostDir(host), d))
        .sort()
        .join(','),
    );

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a');
    await cluster.addHost('b');
    await cluster.startAgent('a');
    await cluster.startAgent('b', ['--no-encryption']);
    c = await loadCluster(cluster.file);
    ferryOk(['vm', 'create', 'r1', '--host', 'a', '--memory', '16MiB'], cluster.env);
    coordinator = await connectHost(c, 'a');
    plainOnly = await connectHost(c, 'b');
  });
  after(async function () {
    coordinator?.close();
    plainOnly?.close();
    await cluster?.stop();
  });

  it('refuses malformed specs naming the field', async function () {
    const before = snapshot('a');
    const cases: [object, RegExp][] = [
      [{ ...incoming(), key: Buffer.alloc(32, 7).toString('base64') }, /params\.key: never goes in JSON.*upgrade ferry/],
      [{ ...incoming(), nonce: Buffer.alloc(8, 9).toString('base64') }, /params\.nonce: never goes in JSON/],
      [incoming({ streams: 0 }), /params\.streams: must be at least 1/],
      [incoming({ migrationId: 'has spaces' }), /params\.migrationId/],
      [incoming({ mode: 'sideways' as never }), /params\.mode: must be one of encrypted, plain/],
      [incoming({ guest: { ...guest, memoryBytes: 12345 } }), /memoryBytes/],
    ];
    for (const [params, message] of cases) {
      await assert.rejects(coordinator.call('migration.prepare-incoming', params as PrepareIncomingParams, keyed), {
        code: 'ERR_FERRY_INPUT',
        message,
      });
    }
    await assert.rejects(coordinator.call('migration.start-outgoing', outgoing({ networks: [] }), keyed), {
      code: 'ERR_FERRY_INPUT',
      message: /params\.networks: needs at least 1 item/,
    });
    await assert.rejects(
      coordinator.call('migration.start-outgoing', outgoing({ destination: { host: 'b', control: 'nowhere' } }), keyed),
      { code: 'ERR_FERRY_INPUT', message: /params\.destination\.control/ },
    );
    assert.deepEqual(snapshot('a'), before);
  });

  it('refuses an encrypted migration on an agent that cannot encrypt', async function () {
    const before = snapshot('b');
    await assert.rejects(plainOnly.call('migration.prepare-incoming', incoming(), keyed), {
      code: 'ERR_FERRY_REFUSED',
      message: /cannot encrypt/,
    });
    assert.deepEqual(snapshot('b'), before);
  });

  it('refuses a guest the source does not have, and an incoming guest whose name is taken', async function () {
    await assert.rejects(coordinator.call('migration.start-outgoing', outgoing({ guest: 'nope' }), keyed), {
      code: 'ERR_FERRY_NOT_FOUND',
      message: /no guest "nope" on host a/,
    });
    const before = readFileSync(path.join(cluster.hostDir('a'), 'guests', 'r1.json'));
    await assert.rejects(coordinator.call('migration.prepare-incoming', incoming(), keyed), {
      code: 'ERR_FERRY_INPUT',
      message: /guest "r1" already exists on host a/,
    });
    assert.deepEqual(readFileSync(path.join(cluster.hostDir('a'), 'guests', 'r1.json')), before);
  });

  it('keeps the migration methods that command guests from host certificates', async function () {
    const dirB = cluster.hostDir('b');
    const credentials = {
      ca: readFileSync(path.join(dirB, 'ca.crt')),
      cert: readFileSync(path.join(dirB, 'host.crt')),
      key: readFileSync(path.join(dirB, 'host.key')),
    };
    const asHost = await AgentClient.connect({ address: c.hosts.get('a')!.control, host: 'a', credentials });
    try {
      await assert.rejects(asHost.call('migration.start-outgoing', outgoing(), keyed), {
        code: 'ERR_FERRY_REFUSED',
        message: /not open to host certificates/,
      });
      await assert.rejects(asHost.call('guest.destroy', { name: 'r1' }), { code: 'ERR_FERRY_REFUSED' });
      assert.equal((await asHost.call('capabilities', {})).host, 'a');
    } finally {
      asHost.close();
    }
  });

  it('gives up an incoming migration that never starts, freeing its slot and name', async function () {
    const spec = incoming({ migrationId: 'm-never-1', mode: 'plain', guest: { ...guest, name: 'r2' }, startTimeoutMs: 300 });
    const prepared = await plainOnly.call('migration.prepare-incoming', spec, keyed);
    assert.equal(prepared.guest.name, 'r2');
    const dirB = cluster.hostDir('b');
    await waitUntil(() => !existsSync(path.join(dirB, 'guests', 'r2.json')), 10_000, 'the incoming guest to be dropped');
    assert.equal(JSON.parse(readFileSync(path.join(dirB, 'ownership', 'm-never-1.decision.json'), 'utf8')).decision, 'not-committed');
    assert.equal((await plainOnly.call('migration.status', { migrationId: 'm-never-1' })).phase, 'aborted');
    assert.deepEqual((await plainOnly.call('capabilities', {})).running, { outgoing: 0, incoming: 0 });
  });

  it('answers status for unknown migrations with a coded error', async function () {
    await assert.rejects(coordinator.call('migration.status', { migrationId: 'm-unknown' }), { code: 'ERR_FERRY_NOT_FOUND' });
  });
});
