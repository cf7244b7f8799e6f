/**
 * Cancelling a running migration (docs/migration.md, "Cancelling"), with real agents as processes:
 * over the control API (`migration.cancel`) in pre-copy (a guest created there and one that
 * arrived by migration, a throttled one) and at switch-over (refused), queued at the source or at
 * the destination, from the CLI (`ferry cancel VM`), and by Ctrl-C (SIGINT) to a `ferry migrate`
 * child process: once to cancel, twice to stop waiting.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadCluster, type Cluster } from '../../src/coordinator/cluster.js';
import { GuestClient } from '../../src/guest/index.js';
import type { GuestInfo, MigrationStreamEvent } from '../../src/control/protocol.js';
import { alive } from '../support/processes.js';
import { waitUntil } from '../support/wait.js';
import { ferry, ferryOk, startFerry, type FerryChild } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';
import { connectHost, eachHost } from '../../src/coordinator/connect.js';
import { migrateGuest, type CoordinatorEvent } from '../../src/coordinator/migrate.js';
import { resolveTarget } from '../../src/coordinator/target.js';
import { ask, migrate } from '../support/migrate.js';
import { jsonLines } from '../support/json-output.js';
import { CuttableRelay } from '../support/relay.js';
import { sleep } from '../../src/common/async.js';

describe('e2e: cancelling a migration (real agents)', function () {
  let cluster: TestCluster;
  let c: Cluster;
  let agentA: RunningAgent;

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a', { maxOutgoing: 1 });
    await cluster.addHost('b', { maxIncoming: 4 });
    await cluster.addHost('c', { maxIncoming: 1 });
    agentA = await cluster.startAgent('a');
    await cluster.startAgent('b');
    await cluster.startAgent('c');
    c = await loadCluster(cluster.file);
  });
  after(async function () {
    await cluster?.stop();
  });

  /** Guest `name` on `host` by that agent's account, or null. */
  async function on(host: string, name: string): Promise<GuestInfo | null> {
    const answer = (await eachHost(c, [host], (client) => client.call('guest.get', { name }))).get(host)!;
    if (answer.ok) return answer.value;
    assert.equal(answer.error.code, 'ERR_FERRY_NOT_FOUND', answer.error.message);
    return null;
  }

  /** An idle guest whose memory is filled (random bytes) and then left alone: its digest stays put. */
  async function idleGuest(name: string, memory = '64MiB'): Promise<GuestInfo> {
    ferryOk(['vm', 'create', name, '--host', 'a', '--memory', memory, '--workload', 'idle'], cluster.env);
    await waitUntil(async () => (await on('a', name))?.workloadReady === true, 60_000, `guest ${name} to fill its memory`);
    return (await on('a', name))!;
  }

  /** The guest process's own status and digest, over its control socket. */
  async function guestProcess(host: string, name: string): Promise<{ digest: string; throttlePercent: number; state: string }> {
    const client = await GuestClient.connect(path.join(cluster.hostDir(host), 'guests', name));
    try {
      const status = await client.status();
      return { digest: await client.digest(), throttlePercent: status.throttlePercent, state: status.state };
    } finally {
      client.close();
    }
  }

  /** The guest runs on `home` only, with the same process; `other` has no copy and decided "not committed". */
  async function stayedOn(home: string, other: string, name: string, pid: number, migrationId: string | null): Promise<void> {
    await waitUntil(async () => (await on(other, name)) === null, 20_000, `host ${other} to drop its copy of ${name}`);
    assert.equal(existsSync(path.join(cluster.hostDir(other), 'guests', name)), false, `no guest directory left on ${other}`);
    const there = await on(home, name);
    assert.equal(there?.state, 'running');
    assert.equal(there?.pid, pid, 'the same guest process runs on');
    if (migrationId) {
      const decision = JSON.parse(readFileSync(path.join(cluster.hostDir(other), 'ownership', `${migrationId}.decision.json`), 'utf8'));
      assert.equal(decision.decision, 'not-committed');
    }
  }
  const stayedOnA = (name: string, pid: number, migrationId: string | null) => stayedOn('a', 'b', name, pid, migrationId);

  /**
   * Migrates `name` with the link capped so that its 64 MiB take about 4 s, and cancels it a
   * second in: pass 1 is then in the channel's window, and the engine waits for its
   * acknowledgement, which the cancel must end.
   */
  async function cancelledInPreCopy(name: string, from: string, to: string) {
    let cancel: Promise<unknown> | null = null;
    let sentAt = 0;
    const m = await migrate(c, name, from, to, {
      maxBytesPerSecond: 16e6,
      onEvent: (e) => {
        if (e.type === 'started') {
          setTimeout(() => {
            sentAt = performance.now();
            cancel = ask(c, from, 'migration.cancel', { guest: name });
          }, 1000);
        }
      },
    });
    const endedAfter = performance.now() - sentAt;
    assert.ok(cancel, 'the cancel was sent in pre-copy');
    const answer = (await cancel) as { outcome: string; to: string; migrationId: string };
    console.log(`      the migration ended ${endedAfter.toFixed(0)} ms after the cancel was sent (a fresh TLS connection included)`);
    assert.equal(answer.outcome, 'aborted');
    assert.equal(answer.to, to);
    assert.equal(answer.migrationId, m.migrationId);
    assert.equal(m.result.outcome, 'aborted');
    assert.deepEqual(m.result.result!.error, { code: 'ERR_FERRY_ABORTED', message: 'cancelled by the operator' });
    assert.ok(!m.events.some((e) => e.type === 'switch-over'), 'it never reached switch-over');
    assert.deepEqual(m.events.at(-1), { type: 'aborted', code: 'ERR_FERRY_ABORTED', message: 'cancelled by the operator' });
    return m;
  }

  const startMigrate = (args: string[]): FerryChild => startFerry(['migrate', ...args], cluster.env);

  it('cancels in pre-copy: the guest runs on at the source, digest intact; b drops its copy; the next migration commits', async function () {
    const before = await idleGuest('c1');
    const digest = (await guestProcess('a', 'c1')).digest;
    const m = await cancelledInPreCopy('c1', 'a', 'b');
    await stayedOnA('c1', before.pid!, m.migrationId);
    const after = await guestProcess('a', 'c1');
    assert.equal(after.digest, digest, 'guest memory unchanged by the cancelled migration');
    assert.equal(after.throttlePercent, 0);
    assert.equal(after.state, 'running');
    // Nothing is left behind that stops the next migration.
    const again = await migrate(c, 'c1', 'a', 'b');
    assert.equal(again.result.outcome, 'committed', JSON.stringify(again.result.result?.error));
    assert.equal(again.result.result!.destinationDigest, again.result.result!.sourceDigest);
    assert.equal((await guestProcess('b', 'c1')).digest, digest);
    assert.equal(await on('a', 'c1'), null);
    assert.equal(alive(before.pid!), false);
    const arrived = (await on('b', 'c1'))!;
    assert.equal(arrived.state, 'running');
    // The same for a guest that arrived by migration (its process started as an incoming one).
    const back = await cancelledInPreCopy('c1', 'b', 'a');
    await stayedOn('b', 'a', 'c1', arrived.pid!, back.migrationId);
    assert.equal((await guestProcess('b', 'c1')).digest, digest);
    const home = await migrate(c, 'c1', 'b', 'a');
    assert.equal(home.result.outcome, 'committed', JSON.stringify(home.result.result?.error));
    assert.equal(home.result.result!.destinationDigest, home.result.result!.sourceDigest);
    assert.equal((await guestProcess('a', 'c1')).digest, digest);
  });

  it('cancels while the data connections are still being set up: at once, not after their timeouts', async function () {
    const before = await idleGuest('k1');
    // b's migration network behind a relay that drops everything b sends back: the source's
    // connections open but never finish their HELLO exchange (10 s each, round after round).
    const network = c.hosts.get('b')!.networks[0]!;
    const advertised = network.advertise;
    const [host, port] = network.listen.split(':');
    const mute = new CuttableRelay({ host: host!, port: Number(port) });
    mute.muteReplies = true;
    network.advertise = await mute.listen();
    try {
      let cancel: Promise<unknown> | null = null;
      let sentAt = 0;
      const events: MigrationStreamEvent[] = [];
      // Before its channel opened the source has no migration result to give: start-outgoing
      // fails with the cancel, as it does when no network answers.
      await assert.rejects(
        migrate(c, 'k1', 'a', 'b', {
          onEvent: (e) => {
            events.push(e);
            if (e.type === 'started') {
              setTimeout(() => {
                sentAt = performance.now();
                cancel = ask(c, 'a', 'migration.cancel', { guest: 'k1' });
              }, 1000);
            }
          },
        }),
        { code: 'ERR_FERRY_ABORTED', message: 'cancelled by the operator' },
      );
      const endedAfter = performance.now() - sentAt;
      assert.ok(cancel, 'the cancel was sent');
      assert.ok(mute.accepted > 0, 'the source was connecting when the cancel came');
      console.log(`      the migration ended ${endedAfter.toFixed(0)} ms after the cancel was sent`);
      assert.ok(endedAfter < 5_000, `it waited ${endedAfter.toFixed(0)} ms: for the connect attempts, not the cancel`);
      assert.equal(((await cancel) as { outcome: string }).outcome, 'aborted');
      assert.deepEqual(events.at(-1), { type: 'aborted', code: 'ERR_FERRY_ABORTED', message: 'cancelled by the operator' });
      await stayedOnA('k1', before.pid!, null);
    } finally {
      network.advertise = advertised;
      mute.close();
    }
  });

  it('takes the throttle off a guest the migration had throttled', async function () {
    ferryOk(['vm', 'create', 't1', '--host', 'a', '--memory', '32MiB', '--workload', 'dirty:64MB'], cluster.env);
    const pid = (await on('a', 't1'))!.pid!;
    const source = await connectHost(c, 'a'); // open beforehand: the cancel must reach the pass after the throttle
    let cancel: Promise<unknown> | null = null;
    let throttled = 0;
    try {
      // Dirtied at 64 MB/s (16 pages a millisecond, so no pass finds nothing dirty) over an 8 MB/s
      // link, with a pause limit nothing dirty fits in (50 ms: 68 pages at 8 MB/s, less the
      // headroom; a limit under the link's round trip would be refused at BEGIN): auto-converge
      // throttles after two passes where the guest dirtied more than half of what was sent.
      const m = await migrate(c, 't1', 'a', 'b', {
        maxBytesPerSecond: 8e6,
        maxDowntimeMs: 50,
        onEvent: (e) => {
          if (e.type === 'throttle' && !cancel) {
            throttled = e.percent;
            cancel = source.call('migration.cancel', { guest: 't1' }).catch((err) => err);
          }
        },
      });
      assert.ok(cancel, `the migration throttled the guest (events: ${JSON.stringify(m.events.map((e: MigrationStreamEvent) => e.type))})`);
      assert.equal(((await cancel) as { outcome?: string }).outcome, 'aborted');
      assert.ok(throttled > 0);
      assert.equal(m.result.outcome, 'aborted');
      await stayedOnA('t1', pid, m.migrationId);
    } finally {
      source.close();
    }
    assert.equal((await guestProcess('a', 't1')).throttlePercent, 0);
  });

  it('refuses a cancel once the switch-over began, and the hand-off completes: the guest runs on b only', async function () {
    const before = await idleGuest('s1');
    const source = await connectHost(c, 'a'); // open beforehand: the cancel must arrive within the switch-over
    let refusal: Promise<unknown> | null = null;
    try {
      const m = await migrate(c, 's1', 'a', 'b', {
        onEvent: (e) => {
          if (e.type === 'switch-over' && !refusal)
            refusal = source.call('migration.cancel', { guest: 's1' }).then(
              () => null,
              (err) => err,
            );
        },
      });
      assert.ok(refusal, 'a cancel was sent at switch-over');
      const err = (await refusal) as { code: string; message: string } | null;
      assert.equal(err?.code, 'ERR_FERRY_REFUSED');
      assert.match(err!.message, /switch-over already under way/);
      assert.equal(m.result.outcome, 'committed');
      assert.equal(m.result.result!.sourceDigest, m.result.result!.destinationDigest);
    } finally {
      source.close();
    }
    await waitUntil(async () => (await on('a', 's1')) === null, 20_000, 'host a to let its copy go');
    assert.equal((await on('b', 's1'))?.state, 'running');
    assert.equal(alive(before.pid!), false);
  });

  it("takes a queued migration out of the queue, the one running left alone; b drops the queued one's copy", async function () {
    const first = await idleGuest('q1');
    const second = await idleGuest('q2', '16MiB');
    let queuedSeen = false;
    let answer: Promise<unknown> = Promise.resolve(null);
    const running = migrate(c, 'q1', 'a', 'b', { maxBytesPerSecond: 2e6 }); // a's one outgoing slot, for about 30 s
    await waitUntil(async () => (await on('a', 'q1'))?.state === 'migrating', 20_000, 'q1 to be on its way');
    const queued = migrate(c, 'q2', 'a', 'b', {
      onEvent: (e) => {
        if (e.type === 'queued' && !queuedSeen) {
          queuedSeen = true;
          answer = ask(c, 'a', 'migration.cancel', { guest: 'q2' }).catch((err) => err);
        }
      },
    });
    const ended = await queued.then(
      (m) => ({ code: null, message: JSON.stringify(m.events.map((e) => e.type)) }),
      (err) => err,
    );
    assert.ok(queuedSeen);
    assert.deepEqual(
      { code: ended.code, message: ended.message },
      { code: 'ERR_FERRY_ABORTED', message: 'cancelled by the operator while queued' },
      `the cancel answered ${JSON.stringify(await answer)}`,
    );
    await stayedOnA('q2', second.pid!, null);
    // The running one was not touched; it is cancelled now so as not to wait for it.
    assert.equal((await on('a', 'q1'))?.state, 'migrating');
    assert.equal(((await ask(c, 'a', 'migration.cancel', { guest: 'q1' })) as { outcome: string }).outcome, 'aborted');
    const m = await running;
    assert.equal(m.result.outcome, 'aborted');
    await stayedOnA('q1', first.pid!, m.migrationId);
  });

  it('cancels a migration still queued at the destination (the coordinator library): the source is never asked', async function () {
    const first = await idleGuest('p1');
    const second = await idleGuest('p2', '16MiB');
    const running = migrate(c, 'p1', 'a', 'c', { maxBytesPerSecond: 2e6 }); // c's one incoming slot, for about 30 s
    await waitUntil(async () => (await on('a', 'p1'))?.state === 'migrating', 20_000, 'p1 to be on its way');
    const cancel = new AbortController();
    const events: CoordinatorEvent[] = [];
    const summary = await migrateGuest(
      { guest: 'p2', cluster: c, to: await resolveTarget(c, 'c') },
      {
        cancel: cancel.signal,
        onEvent: (e) => {
          events.push(e);
          if (e.type === 'queued' && e.side === 'destination') cancel.abort();
        },
      },
    );
    assert.equal(summary.report.ok, false);
    assert.deepEqual(summary.report.error, { code: 'ERR_FERRY_ABORTED', message: 'cancelled by the operator while queued' });
    assert.deepEqual(
      events.map((e) => e.type),
      ['decided', 'queued', 'cancelling'],
    );
    assert.equal(await on('c', 'p2'), null);
    assert.equal((await on('a', 'p2'))?.pid, second.pid);
    assert.equal((await on('a', 'p1'))?.state, 'migrating', 'the running one was not touched');
    await ask(c, 'a', 'migration.cancel', { guest: 'p1' });
    const m = await running;
    assert.equal(m.result.outcome, 'aborted');
    await stayedOn('a', 'c', 'p1', first.pid!, m.migrationId);
  });

  it('`ferry cancel VM` from another shell: exit 0, the `ferry migrate` running it ends with exit 1 and the guest on the source', async function () {
    const before = await idleGuest('x1');
    const child = startMigrate(['x1', '--to', 'b', '--bandwidth', '16MB', '--json']);
    await child.waitForOutput('stdout', /"type":"started"/, 20_000);
    const r = ferry(['cancel', 'x1', '--json'], cluster.env);
    assert.equal(r.status, 0, r.stderr);
    const result = jsonLines(r.stdout).pop()!;
    assert.deepEqual(
      { ...result, migrationId: typeof result.migrationId },
      { type: 'result', ok: true, vm: 'x1', host: 'a', to: 'b', migrationId: 'string', outcome: 'aborted', error: null },
    );
    assert.equal((await child.ended).status, 1);
    const report = jsonLines(child.stdout()).pop()!;
    assert.equal(report.ok, false);
    assert.equal(report.error.code, 'ERR_FERRY_ABORTED');
    assert.match(report.error.message, /^cancelled by the operator; guest "x1" runs on a/);
    await stayedOnA('x1', before.pid!, result.migrationId);

    const again = ferry(['cancel', 'x1'], cluster.env);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /guest "x1" has no migration to cancel on host a \[ERR_FERRY_REFUSED\]/);
    const nobody = ferry(['cancel', 'nosuch', '--json'], cluster.env);
    assert.equal(nobody.status, 2);
    assert.equal(jsonLines(nobody.stdout).pop()!.error.code, 'ERR_FERRY_NOT_FOUND');
    const bad = ferry(['cancel', 'Not_A_Name'], cluster.env);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /\[ERR_FERRY_USAGE\]/);
    assert.equal((await on('a', 'x1'))?.pid, before.pid, 'the refused cancels changed nothing');
  });

  it('Ctrl-C to `ferry migrate`: it cancels, says so, and exits 1 with the result; the guest stays on the source', async function () {
    const before = await idleGuest('i1');
    const digest = (await guestProcess('a', 'i1')).digest;
    const child = startMigrate(['i1', '--to', 'b', '--bandwidth', '16MB', '--json']);
    await child.waitForOutput('stdout', /"type":"started"/, 20_000);
    await sleep(500);
    child.process.kill('SIGINT');
    assert.equal((await child.ended).status, 1, child.stderr());
    assert.equal(
      child
        .stderr()
        .split('\n')
        .filter((l) => /cancelling the migration of i1/.test(l)).length,
      1,
      child.stderr(),
    );
    const lines = jsonLines(child.stdout());
    const report = lines.pop()!;
    assert.equal(report.type, 'result');
    assert.equal(report.ok, false);
    assert.equal(report.error.code, 'ERR_FERRY_ABORTED');
    assert.match(report.error.message, /^cancelled by the operator/);
    assert.ok(
      lines.some((l) => l.type === 'cancelling'),
      'a cancelling event among the JSON events',
    );
    assert.ok(lines.some((l) => l.type === 'aborted' && l.side === 'source'));
    await stayedOnA('i1', before.pid!, null);
    assert.equal((await guestProcess('a', 'i1')).digest, digest);
    // And it moves afterwards.
    const moved = ferry(['migrate', 'i1', '--to', 'b', '--verify'], cluster.env);
    assert.equal(moved.status, 0, moved.stderr);
    assert.equal((await on('b', 'i1'))?.state, 'running');
  });

  it('Ctrl-C twice: stops waiting at once, even for an agent that does not answer; the guest ends on exactly one host', async function () {
    const before = await idleGuest('d1');
    const child = startMigrate(['d1', '--to', 'b', '--bandwidth', '16MB', '--json']);
    await child.waitForOutput('stdout', /"type":"started"/, 20_000);
    // The source agent stops answering: the cancel gets no answer, and only a detach ends the wait.
    agentA.process.kill('SIGSTOP');
    try {
      child.process.kill('SIGINT');
      await child.waitForOutput('stderr', /cancelling the migration of d1/, 10_000);
      child.process.kill('SIGINT');
      assert.equal((await child.ended).status, 1, child.stderr());
    } finally {
      agentA.process.kill('SIGCONT');
    }
    assert.match(child.stderr(), /no longer following the migration of d1: it carries on by itself/);
    const report = jsonLines(child.stdout()).pop()!;
    assert.equal(report.ok, false);
    assert.equal(report.error.code, 'ERR_FERRY_DETACHED');
    // However it ends, one host runs the guest.
    let where: string[] = [];
    await waitUntil(
      async () => {
        const a = await on('a', 'd1');
        const b = await on('b', 'd1');
        where = [a ? `a:${a.state}` : '', b ? `b:${b.state}` : ''].filter(Boolean);
        return where.length === 1 && where[0]!.endsWith(':running');
      },
      60_000,
      'the guest to run on exactly one host',
    );
    console.log(`      after the detach the guest runs on ${where[0]} (pid ${before.pid} was on a)`);
  });
});
