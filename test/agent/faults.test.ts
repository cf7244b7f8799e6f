/**
 * An agent killed, or the data network cut, in the middle of a migration: afterwards the guest
 * runs on exactly one host, with the restarted agents finishing what the dead one left
 * (docs/operations.md, "Restarts"), or the source asking the destination what it decided.
 */
import assert from 'node:assert/strict';
import { loadCluster, type Cluster } from '../../src/coordinator/cluster.js';
import { eachHost } from '../../src/coordinator/connect.js';
import type { GuestInfo } from '../../src/control/protocol.js';
import { alive } from '../support/processes.js';
import { waitUntil } from '../support/wait.js';
import { sleep } from '../../src/common/async.js';
import { ferryOk } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';
import { ask, migrate } from '../support/migrate.js';
import { CuttableRelay } from '../support/relay.js';

describe('agent: an agent killed during a migration (real agents)', function () {
  let cluster: TestCluster;
  let c: Cluster;
  const agents: Record<string, RunningAgent> = {};

  beforeEach(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a');
    await cluster.addHost('b');
    agents.a = await cluster.startAgent('a');
    agents.b = await cluster.startAgent('b');
    c = await loadCluster(cluster.file);
    // 64 MiB written at 8 MB/s over a 16 MB/s link: several seconds of pre-copy to kill into.
    ferryOk(['vm', 'create', 'f1', '--host', 'a', '--memory', '64MiB', '--workload', 'dirty:8MB'], cluster.env);
  });
  afterEach(async function () {
    await cluster?.stop();
  });

  /** Where guest `name` is, by every host's own account. */
  async function whereabouts(name = 'f1'): Promise<Map<string, GuestInfo>> {
    const found = new Map<string, GuestInfo>();
    for (const [host, outcome] of await eachHost(c, ['a', 'b'], (client) => client.call('guest.get', { name }))) {
      if (outcome.ok) found.set(host, outcome.value);
      else assert.equal(outcome.error.code, 'ERR_FERRY_NOT_FOUND', outcome.error.message);
    }
    return found;
  }

  /** Waits until exactly one host has guest `name` and it runs there; returns that host. */
  async function settledOnOneHost(name = 'f1'): Promise<string> {
    let last = '';
    await waitUntil(
      async () => {
        const found = await whereabouts(name);
        last = JSON.stringify([...found].map(([h, g]) => [h, g.state]));
        return found.size === 1 && [...found.values()][0]!.state === 'running';
      },
      60_000,
      () => `the guest to run on exactly one host (it is at ${last})`,
    );
    return [...(await whereabouts(name)).keys()][0]!;
  }

  it('source agent SIGKILLed in pre-copy: the migration completes, the restarted source lets its copy go', async function () {
    const sourcePid = (await whereabouts()).get('a')!.pid!;
    let killed = false;
    const moving = migrate(c, 'f1', 'a', 'b', {
      maxBytesPerSecond: 16e6,
      onEvent: (e) => {
        if (e.type === 'pass' && !killed) {
          killed = true;
          void agents.a!.stop('SIGKILL');
        }
      },
    }).catch((err) => err);
    const outcome = await moving;
    assert.ok(killed, 'the kill came during pre-copy');
    assert.equal(outcome.code, 'ERR_FERRY_NETWORK', 'the coordinator lost the source agent');
    agents.a = await cluster.startAgent('a');
    const host = await settledOnOneHost();
    assert.equal(host, 'b');
    await agents.a.waitForLog(/"msg":"guest handed over"/, 20_000);
    await waitUntil(() => !alive(sourcePid), 10_000, 'the source copy to exit');
  });

  it('source agent SIGKILLed in pre-copy and restarted: it follows the migration, and a cancel to it ends it with the guest running on the source', async function () {
    // A guest whose 32 MiB are all written (idle fills them), over a 4 MB/s link: about 8 s of
    // pass 1, time for a restart and a cancel well inside pre-copy.
    ferryOk(['vm', 'create', 'g2', '--host', 'a', '--memory', '32MiB', '--workload', 'idle'], cluster.env);
    await waitUntil(async () => (await whereabouts('g2')).get('a')!.workloadReady === true, 20_000, 'the guest to fill its memory');
    const sourcePid = (await whereabouts('g2')).get('a')!.pid!;
    let killed = false;
    const moving = migrate(c, 'g2', 'a', 'b', {
      maxBytesPerSecond: 4e6,
      onEvent: (e) => {
        // Two seconds into pass 1 (it has no event of its own before its end).
        if (e.type === 'started' && !killed) {
          killed = true;
          setTimeout(() => void agents.a!.stop('SIGKILL'), 2000);
        }
      },
    }).catch((err) => err);
    assert.equal((await moving).code, 'ERR_FERRY_NETWORK', 'the coordinator lost the source agent');
    agents.a = await cluster.startAgent('a');
    await agents.a.waitForLog(/"msg":"following an outgoing migration left by the previous agent"/, 20_000);
    const answer = await ask(c, 'a', 'migration.cancel', { guest: 'g2' });
    assert.equal(answer.outcome, 'aborted');
    assert.equal(answer.to, 'b');
    assert.deepEqual(answer.result?.error, { code: 'ERR_FERRY_ABORTED', message: 'cancelled by the operator' });
    assert.equal(await settledOnOneHost('g2'), 'a');
    assert.equal((await whereabouts('g2')).get('a')!.pid, sourcePid, 'the same guest process runs on');
  });

  it('destination agent SIGKILLed at switch-over: the source waits in doubt, asks the restarted agent, and resumes', async function () {
    const sourcePid = (await whereabouts()).get('a')!.pid!;
    let killed = false;
    const result = await migrate(c, 'f1', 'a', 'b', {
      commitTimeoutMs: 2000,
      onEvent: (e) => {
        if (e.type === 'switch-over' && !killed) {
          killed = true;
          void agents.b!.stop('SIGKILL');
          setTimeout(() => void cluster.startAgent('b').then((b) => (agents.b = b)), 4000);
        }
      },
    });
    assert.ok(killed);
    const types = result.events.map((e) => e.type);
    // Either the destination was lost before it could commit (in doubt, then asked), or the
    // engine saw the channel fail first and aborted before pausing: both leave the guest here.
    if (types.includes('in-doubt')) {
      assert.ok(types.includes('resolving'), 'it asked while the destination was down');
      assert.deepEqual(
        result.events.find((e) => e.type === 'resolved'),
        { type: 'resolved', decision: 'not-committed' },
      );
    }
    assert.equal(result.result.outcome, 'aborted');
    assert.equal(await settledOnOneHost(), 'a');
    assert.equal((await whereabouts()).get('a')!.pid, sourcePid);
  });

  it('destination agent SIGKILLed as pass 1 ends (a guest of few written pages: the switch-over follows): the guest stays on the source and runs', async function () {
    const sourcePid = (await whereabouts()).get('a')!.pid!;
    let killed = false;
    const result = await migrate(c, 'f1', 'a', 'b', {
      maxBytesPerSecond: 16e6,
      commitTimeoutMs: 3000,
      onEvent: (e) => {
        if (e.type === 'pass' && !killed) {
          killed = true;
          void agents.b!.stop('SIGKILL');
          // The next agent comes back while the source waits, paused or not, for an answer.
          setTimeout(() => void cluster.startAgent('b').then((b) => (agents.b = b)), 2000);
        }
      },
    });
    assert.ok(killed);
    assert.equal(result.result.outcome, 'aborted', JSON.stringify(result.result.result?.error));
    const host = await settledOnOneHost();
    assert.equal(host, 'a');
    assert.equal((await whereabouts()).get('a')!.pid, sourcePid, 'the same guest process runs on');
  });

  it('destination agent SIGKILLed in pass 1 and restarted: it tells the source, which stops redialling and runs the guest on', async function () {
    // 32 MiB all written (idle fills them) over a 4 MB/s link: about 8 s of pass 1 to kill into.
    ferryOk(['vm', 'create', 'g3', '--host', 'a', '--memory', '32MiB', '--workload', 'idle'], cluster.env);
    await waitUntil(async () => (await whereabouts('g3')).get('a')!.workloadReady === true, 20_000, 'the guest to fill its memory');
    const sourcePid = (await whereabouts('g3')).get('a')!.pid!;
    let back: Promise<void> | null = null;
    let passEnded = false;
    const result = await migrate(c, 'g3', 'a', 'b', {
      maxBytesPerSecond: 4e6,
      onEvent: (e) => {
        // Two seconds into pass 1 (it reports nothing of its own before its end).
        if (e.type === 'started' && !back) {
          back = (async () => {
            await sleep(2000);
            await agents.b!.stop('SIGKILL');
            agents.b = await cluster.startAgent('b');
          })();
        }
        if (e.type === 'pass' || e.type === 'switch-over') passEnded = true;
      },
    });
    assert.ok(back, 'the migration started');
    assert.ok(!passEnded, 'the kill fell in pass 1');
    await back;
    assert.equal(result.result.outcome, 'aborted', JSON.stringify(result.result.result?.error));
    // The restarted agent recorded "not committed" and told the source; without that the source
    // would redial until its reconnect window (30 s) ran out.
    assert.match(result.result.result?.error?.message ?? '', /destination's agent dropped its copy/);
    assert.equal(await settledOnOneHost('g3'), 'a');
    assert.equal((await whereabouts('g3')).get('a')!.pid, sourcePid, 'the same guest process runs on');
  });

  /** Routes the migration networks of host b through a relay the test can cut. */
  async function relayToB(): Promise<CuttableRelay> {
    const network = c.hosts.get('b')!.networks[0]!;
    const [host, port] = network.listen.split(':');
    const relay = new CuttableRelay({ host: host!, port: Number(port) });
    network.advertise = await relay.listen();
    return relay;
  }

  it('data connections cut in pre-copy, the network down for a while: the guest runs on exactly one host', async function () {
    const relay = await relayToB();
    const sourcePid = (await whereabouts()).get('a')!.pid!;
    try {
      const result = await migrate(c, 'f1', 'a', 'b', {
        maxBytesPerSecond: 16e6,
        onEvent: (e) => {
          if (e.type === 'pass' && relay.cuts === 0) {
            relay.partitioned = true;
            relay.cut();
            setTimeout(() => (relay.partitioned = false), 3000);
          }
        },
      });
      assert.equal(relay.cuts, 1, 'the cut never happened');
      const host = await settledOnOneHost();
      console.log(`      after the cut: ${result.result.outcome}, the guest runs on ${host}`);
      if (result.result.outcome === 'committed') {
        assert.equal(host, 'b');
        assert.equal(result.result.result!.sourceDigest, result.result.result!.destinationDigest);
      } else {
        assert.equal(result.result.outcome, 'aborted');
        assert.equal(host, 'a');
        assert.equal((await whereabouts()).get('a')!.pid, sourcePid, 'the same guest process runs on');
      }
    } finally {
      relay.close();
    }
  });

  it('data connections cut at switch-over, the network down: the source asks the destination, and one host runs the guest', async function () {
    const relay = await relayToB();
    const sourcePid = (await whereabouts()).get('a')!.pid!;
    try {
      const result = await migrate(c, 'f1', 'a', 'b', {
        commitTimeoutMs: 2000,
        onEvent: (e) => {
          if (e.type === 'switch-over' && relay.cuts === 0) {
            relay.partitioned = true;
            relay.cut();
          }
        },
      });
      assert.equal(relay.cuts, 1, 'the cut never happened');
      const host = await settledOnOneHost();
      const types = result.events.map((e) => e.type);
      console.log(
        `      after the cut: ${result.result.outcome} (${types.filter((t) => t !== 'pass').join(', ')}), the guest runs on ${host}`,
      );
      if (result.result.outcome === 'committed') {
        assert.equal(host, 'b');
      } else {
        assert.equal(result.result.outcome, 'aborted');
        assert.equal(host, 'a');
        assert.equal((await whereabouts()).get('a')!.pid, sourcePid, 'the same guest process runs on');
      }
      // The destination's record and the guest's home agree.
      const decision = await eachHost(c, ['b'], (client) => client.call('migration.resolve', { migrationId: result.migrationId }));
      const answer = decision.get('b')!;
      assert.ok(answer.ok, 'the destination answers what it decided');
      assert.equal(answer.value.decision, host === 'b' ? 'committed' : 'not-committed');
    } finally {
      relay.close();
    }
  });
});
