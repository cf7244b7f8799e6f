/**
 * Migrations between real agents over the real control API and data plane: a guest moves and
 * lands exactly once, the host limits queue the rest first come first served, a host without a
 * passthrough NIC gives the emulated one, an agent that cannot encrypt refuses encrypted specs,
 * and the key is nowhere on disk or in a log.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadCluster, type Cluster } from '../../src/coordinator/cluster.js';
import { alive } from '../support/processes.js';
import { ferryOk } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';
import { ask, migrate } from '../support/migrate.js';
import { findSecret } from '../support/secrets.js';

describe('agent: migrations between real agents', function () {
  let cluster: TestCluster;
  let c: Cluster;
  let a: RunningAgent;
  let b: RunningAgent;
  const keys: Buffer[] = [];

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a', { sriov: true, maxOutgoing: 2 });
    await cluster.addHost('b', { maxIncoming: 2 });
    a = await cluster.startAgent('a');
    b = await cluster.startAgent('b');
    c = await loadCluster(cluster.file);
  });
  after(async function () {
    await cluster?.stop();
  });

  const create = (name: string, host: string, extra: string[] = []) =>
    ferryOk(['vm', 'create', name, '--host', host, '--memory', '16MiB', ...extra], cluster.env);

  it('moves a guest: it runs on the destination only, with the records on both sides', async function () {
    create('m1', 'a', ['--workload', 'kv:get=200,set=100', '--disk', '1MiB']);
    const before = await ask(c, 'a', 'guest.get', { name: 'm1' });
    const m = await migrate(c, 'm1', 'a', 'b');
    keys.push(m.key, m.nonce);
    assert.equal(m.result.outcome, 'committed', JSON.stringify(m.result.result?.error));
    assert.equal(m.result.result!.sourceDigest, m.result.result!.destinationDigest);
    // Host a sets no crypto-thread budget: the channel may seal on every core.
    assert.equal(m.result.result!.cryptoThreads.limit, null);
    assert.ok(m.result.result!.cryptoThreads.peak >= 1);
    assert.ok(m.events.some((e) => e.type === 'started'));
    assert.ok(m.events.some((e) => e.type === 'pass'));
    const onB = await ask(c, 'b', 'guest.get', { name: 'm1' });
    assert.equal(onB.state, 'running');
    await assert.rejects(ask(c, 'a', 'guest.get', { name: 'm1' }), { code: 'ERR_FERRY_NOT_FOUND' });
    assert.equal(alive(before.pid!), false);
    const decision = JSON.parse(readFileSync(path.join(cluster.hostDir('b'), 'ownership', `${m.migrationId}.decision.json`), 'utf8'));
    assert.equal(decision.decision, 'committed');
    assert.ok(existsSync(path.join(cluster.hostDir('a'), 'ownership', `${m.migrationId}.handoff.json`)));
    // The resolve query after the fact tells the truth.
    assert.equal((await ask(c, 'b', 'migration.resolve', { migrationId: m.migrationId })).decision, 'committed');
  });

  it('gives a passthrough-NIC guest the emulated NIC on a host without one, and says so', async function () {
    create('nic1', 'a', ['--nic', 'sriov']);
    const m = await migrate(c, 'nic1', 'a', 'b');
    keys.push(m.key, m.nonce);
    assert.equal(m.prepared.nicFallback, true);
    assert.equal(m.result.outcome, 'committed', JSON.stringify(m.result.result?.error));
    assert.equal((await ask(c, 'b', 'guest.get', { name: 'nic1' })).nic, 'virtio');
  });

  it('runs 6 migrations with limits of 2: never more than 2 at once, the rest queued, all complete', async function () {
    const names = ['q0', 'q1', 'q2', 'q3', 'q4', 'q5'];
    for (const n of names) create(n, 'a');
    let running = 0;
    let peak = 0;
    const results = await Promise.all(
      names.map((n) =>
        migrate(c, n, 'a', 'b', {
          onPrepared: () => {
            running++;
            peak = Math.max(peak, running);
          },
          onSettled: () => running--,
        }),
      ),
    );
    for (const m of results) keys.push(m.key, m.nonce);
    assert.ok(peak <= 2, `peak ${peak}`);
    assert.deepEqual(
      results.map((m) => m.result.outcome),
      names.map(() => 'committed'),
      JSON.stringify(results.map((m) => m.result.result?.error)),
    );
    assert.ok(results.filter((m) => m.queuedAtDestination.length > 0).length >= 4, 'at least 4 were told they were queued');
  });

  it('refuses an encrypted spec on an agent that cannot encrypt', async function () {
    await b.stop();
    b = await cluster.startAgent('b', ['--no-encryption']);
    create('plain1', 'a');
    await assert.rejects(migrate(c, 'plain1', 'a', 'b', { mode: 'encrypted' }), { code: 'ERR_FERRY_REFUSED', message: /cannot encrypt/ });
    const m = await migrate(c, 'plain1', 'a', 'b', { mode: 'plain' });
    assert.equal(m.result.outcome, 'committed');
  });

  it('leaves no key in any log or state file', function () {
    const hits = keys.flatMap((k) =>
      findSecret([cluster.root, { name: 'agent a log', text: a.logs() }, { name: 'agent b log', text: b.logs() }], k),
    );
    assert.deepEqual(hits, []);
  });
});
