/**
 * The hand-off under agent faults, with `ferry migrate` and `ferry resolve` run as processes
 * against real agents (docs/migration.md, "When the coordinator loses an agent" and "When the
 * destination is lost for good"): a source agent SIGKILLed in pre-copy and restarted (the
 * coordinator follows the migration to its true end), a second migration of a guest that is
 * still migrating (refused with the running one's id), a destination lost at switch-over and
 * fenced by the operator, a destination that dies right after recording its commit, and state
 * directories restored from a backup (before a move, before a commit record, before a fence).
 * The figures the issue asks for are printed: from the end `ferry migrate` reports to the guest
 * running with no migration left, and from a restarted destination agent to the source's guest
 * resumed or released.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { loadCluster, type Cluster } from '../../src/coordinator/cluster.js';
import { eachHost } from '../../src/coordinator/connect.js';
import type { GuestInfo } from '../../src/control/protocol.js';
import { GuestClient } from '../../src/guest/index.js';
import { waitUntil } from '../support/wait.js';
import { ferry, ferryOk, startFerry } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';
import { jsonLines } from '../support/json-output.js';
import { ask } from '../support/migrate.js';
import { alive, processState } from '../support/processes.js';
import { sleep } from '../../src/common/async.js';

describe('e2e: the hand-off when agents fail (real agents, the CLI as a process)', function () {
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
  });
  afterEach(async function () {
    await cluster?.stop();
  });

  /** Where guest `name` is, by every host's own account. */
  async function whereabouts(name: string, hosts = ['a', 'b']): Promise<Map<string, GuestInfo>> {
    const found = new Map<string, GuestInfo>();
    for (const [host, outcome] of await eachHost(c, hosts, (client) => client.call('guest.get', { name }))) {
      if (outcome.ok) found.set(host, outcome.value);
      else assert.equal(outcome.error.code, 'ERR_FERRY_NOT_FOUND', outcome.error.message);
    }
    return found;
  }

  /** Guest `name` on host a (the source), while b may be down. */
  const onA = async (name: string) => (await whereabouts(name, ['a'])).get('a');

  /** Waits until exactly one host has guest `name`, running, and no host runs a migration of it; returns that host. */
  async function settled(name: string, ms = 20_000): Promise<string> {
    let last = '';
    const host = await waitUntil(
      async () => {
        const found = await whereabouts(name);
        last = JSON.stringify([...found].map(([h, g]) => [h, g.state]));
        if (found.size !== 1 || [...found.values()][0]!.state !== 'running') return null;
        const [only] = [...found.keys()];
        const running = await eachHost(c, [only!], (client) => client.call('migration.outgoing', { guest: name }));
        return running.get(only!)!.ok ? null : only;
      },
      ms,
      () => `guest ${name} to run on exactly one host with no migration left (it is at ${last})`,
    );
    return host;
  }

  function createGuest(name: string, memory: string, workload: string): void {
    ferryOk(['vm', 'create', name, '--host', 'a', '--memory', memory, '--workload', workload], cluster.env);
  }

  async function filled(name: string): Promise<void> {
    await waitUntil(async () => (await whereabouts(name)).get('a')?.workloadReady === true, 30_000, `guest ${name} to fill its memory`);
  }

  it('source agent SIGKILLed in pre-copy and restarted: ferry migrate follows it to its true end, one running guest at once', async function () {
    // 64 MiB dirtied at 8 MB/s over a 16 MB/s link: seconds of pre-copy to kill into.
    createGuest('f1', '64MiB', 'dirty:8MB');
    const migrate = startFerry(['migrate', 'f1', '--to', 'b', '--bandwidth', '16MB', '--json'], cluster.env);
    await migrate.waitForOutput('stdout', /"type":"pass"/, 30_000);
    await agents.a!.stop('SIGKILL');
    agents.a = await cluster.startAgent('a');
    const end = await migrate.ended;
    const endedAt = performance.now();
    const lines = jsonLines(end.stdout);
    const result = lines.at(-1)!;
    assert.ok(
      lines.some((l) => l.type === 'reconnecting'),
      'it lost the source agent and reached it again',
    );
    const host = await settled('f1');
    const tookMs = performance.now() - endedAt;
    console.log(
      `      ferry migrate: exit ${end.status}, ok ${result.ok}; from its end to the guest running on ${host} with no migration left: ${tookMs.toFixed(0)} ms`,
    );
    // The report is the truth: moved and on b, or failed and on a.
    if (result.ok) {
      assert.equal(end.status, 0);
      assert.equal(host, 'b');
    } else {
      assert.equal(end.status, 1, end.stderr);
      assert.equal(host, 'a');
      assert.doesNotMatch(result.error.message, /still running/);
    }
    assert.equal(result.type, 'result');
  });

  it('a second ferry migrate of a guest still migrating is refused with that migration id, and works once it ended', async function () {
    // 32 MiB of written memory over a 4 MB/s link: about 8 s of pass 1.
    createGuest('g2', '32MiB', 'idle');
    await filled('g2');
    const first = startFerry(['migrate', 'g2', '--to', 'b', '--bandwidth', '4MB', '--json'], cluster.env);
    await first.waitForOutput('stdout', /"type":"started"/, 30_000);
    const { migrationId } = await ask(c, 'a', 'migration.outgoing', { guest: 'g2' });
    const second = ferry(['migrate', 'g2', '--to', 'b', '--json'], cluster.env);
    assert.equal(second.status, 1, second.stderr);
    const refusal = jsonLines(second.stdout).at(-1)!;
    assert.equal(refusal.error.code, 'ERR_FERRY_REFUSED');
    assert.match(refusal.error.message, new RegExp(`migration ${migrationId} to b is still running`));
    assert.equal((await first.ended).status, 0, first.stderr());
    const startedAt = performance.now();
    const back = ferry(['migrate', 'g2', '--to', 'a', '--json'], cluster.env);
    assert.equal(back.status, 0, back.stderr);
    console.log(
      `      the next migration, asked as soon as the first ended, moved it back in ${(performance.now() - startedAt).toFixed(0)} ms`,
    );
    assert.equal(await settled('g2'), 'a');
  });

  /**
   * Restarts b's agent so that it dies at crash point `point` of the next migration to it (before
   * its record: its copy ready to commit and nothing recorded; a kill timed on the CLI's switch-over
   * event raced the agent's own commit). `dead` resolves once it has died.
   */
  async function dieAt(point: string): Promise<{ dead: Promise<unknown> }> {
    await agents.b!.stop('SIGKILL');
    const b = (agents.b = await cluster.startAgent('b', [], { fault: point }));
    return { dead: waitUntil(() => b.process.signalCode === 'SIGKILL', 60_000, 'the destination agent to die at its crash point') };
  }

  /**
   * Host b "powered off" with a migration to it at switch-over: its agent is already dead (`agentDead`
   * resolves once it is), and its incoming guest process, once ready to commit, is SIGKILLed too.
   * Resolves once the source waits in doubt.
   */
  async function destinationGone(name: string, agentDead: Promise<unknown>): Promise<{ migrationId: string; incomingPid: number }> {
    await agentDead;
    const dir = path.join(cluster.hostDir('b'), 'guests', name);
    const incoming = await waitUntil(() => GuestClient.connect(dir).catch(() => null), 30_000, "b's incoming guest process");
    const incomingPid = incoming.pid;
    try {
      await waitUntil(async () => (await incoming.migration())?.phase === 'ready-to-commit', 30_000, "b's copy ready to commit");
    } finally {
      incoming.close();
    }
    process.kill(incomingPid, 'SIGKILL');
    await waitUntil(async () => (await onA(name))?.state === 'in-doubt', 30_000, `guest ${name} in doubt on a`);
    const { migrationId } = await ask(c, 'a', 'migration.waiting', { guest: name });
    return { migrationId, incomingPid };
  }

  it('destination lost at switch-over: resolve --destination-lost needs its confirmation, resumes the source, and the returning destination drops its copy', async function () {
    createGuest('h3', '32MiB', 'dirty:4MB');
    await filled('h3');
    const sourcePid = (await onA('h3'))!.pid!;
    const { dead: killed } = await dieAt('destination:before-commit-record');
    const migrate = startFerry(['migrate', 'h3', '--to', 'b', '--json'], cluster.env);
    const { migrationId, incomingPid } = await destinationGone('h3', killed);

    const unconfirmed = ferry(['resolve', 'h3', '--destination-lost'], cluster.env);
    assert.equal(unconfirmed.status, 2, unconfirmed.stderr);
    assert.match(unconfirmed.stderr, /--i-have-powered-off-the-destination/);
    assert.match(unconfirmed.stderr, /runs twice/);
    assert.equal((await onA('h3'))!.state, 'in-doubt', 'the refusal changed nothing');

    const fenced = ferry(['resolve', 'h3', '--destination-lost', '--i-have-powered-off-the-destination', '--json'], cluster.env);
    assert.equal(fenced.status, 0, fenced.stderr);
    const report = jsonLines(fenced.stdout).at(-1)!;
    assert.equal(report.settledBy, 'operator');
    assert.equal(report.decision, 'not-committed');
    assert.equal(report.migrationId, migrationId);
    const atA = (await onA('h3'))!;
    assert.equal(atA.state, 'running');
    assert.equal(atA.pid, sourcePid, 'the same guest process runs on');
    const fence = path.join(cluster.hostDir('a'), 'ownership', `${migrationId}.fenced.json`);
    assert.equal(JSON.parse(readFileSync(fence, 'utf8')).migrationId, migrationId);
    assert.equal(statSync(fence).mode & 0o777, 0o600, 'the fence record is for its owner only');
    const end = await migrate.ended;
    assert.equal(end.status, 1, 'ferry migrate reports the guest stayed on the source');

    // The destination comes back: its copy goes, never having run.
    const restartedAt = performance.now();
    agents.b = await cluster.startAgent('b');
    const readyAt = performance.now();
    await waitUntil(() => !existsSync(path.join(cluster.hostDir('b'), 'guests', 'h3')), 10_000, "b's copy to go");
    console.log(
      `      from the restarted destination agent to its copy released: ${(performance.now() - restartedAt).toFixed(0)} ms from its start, ${(performance.now() - readyAt).toFixed(0)} ms from its ready`,
    );
    assert.equal(alive(incomingPid), false);
    assert.equal(await settled('h3'), 'a');
    const decision = JSON.parse(readFileSync(path.join(cluster.hostDir('b'), 'ownership', `${migrationId}.decision.json`), 'utf8'));
    assert.equal(decision.decision, 'not-committed');
  });

  it('destination dies right after recording its commit, the source is fenced: the restarted destination asks first and drops its copy', async function () {
    const { dead: crashed } = await dieAt('destination:after-commit-record');
    createGuest('k4', '32MiB', 'dirty:4MB');
    await filled('k4');
    const sourcePid = (await whereabouts('k4')).get('a')!.pid!;
    const migrate = startFerry(['migrate', 'k4', '--to', 'b', '--json'], cluster.env);
    const { migrationId } = await destinationGone('k4', crashed);
    const recorded = JSON.parse(readFileSync(path.join(cluster.hostDir('b'), 'ownership', `${migrationId}.decision.json`), 'utf8'));
    assert.equal(recorded.decision, 'committed', 'b recorded its commit before it died');

    const fenced = ferry(['resolve', 'k4', '--destination-lost', '--i-have-powered-off-the-destination', '--json'], cluster.env);
    assert.equal(fenced.status, 0, fenced.stderr);
    assert.equal((await onA('k4'))!.pid, sourcePid);
    assert.equal((await migrate.ended).status, 1);

    const restartedAt = performance.now();
    agents.b = await cluster.startAgent('b');
    const readyAt = performance.now();
    await waitUntil(() => !existsSync(path.join(cluster.hostDir('b'), 'guests', 'k4')), 10_000, "b's copy to go");
    console.log(
      `      from the restarted destination agent to its recorded-but-fenced copy released: ${(performance.now() - restartedAt).toFixed(0)} ms from its start, ${(performance.now() - readyAt).toFixed(0)} ms from its ready`,
    );
    await agents.b.waitForLog(/operator settled the migration without this host/, 5000);
    assert.equal(await settled('k4'), 'a');
    assert.equal(existsSync(path.join(cluster.hostDir('b'), 'ownership', `${migrationId}.fenced.json`)), true);
  });

  it('destination agent SIGKILLed at switch-over and restarted: the source resumes within seconds of its return', async function () {
    createGuest('r5', '32MiB', 'dirty:4MB');
    await filled('r5');
    const sourcePid = (await whereabouts('r5')).get('a')!.pid!;
    const { dead: killed } = await dieAt('destination:before-commit-record');
    const migrate = startFerry(['migrate', 'r5', '--to', 'b', '--json'], cluster.env);
    await destinationGone('r5', killed);
    // Down long enough for the source's resolve queries to back off (1, 2, 4 s).
    await sleep(8000);
    const restartedAt = performance.now();
    agents.b = await cluster.startAgent('b');
    const readyAt = performance.now();
    await waitUntil(async () => (await whereabouts('r5')).get('a')?.state === 'running', 15_000, 'the source guest to resume');
    console.log(
      `      from the restarted destination agent to the source's guest resumed: ${(performance.now() - restartedAt).toFixed(0)} ms from its start, ${(performance.now() - readyAt).toFixed(0)} ms from its ready`,
    );
    assert.equal((await whereabouts('r5')).get('a')!.pid, sourcePid);
    const end = await migrate.ended;
    const endedAt = performance.now();
    assert.equal(end.status, 1);
    assert.equal(await settled('r5'), 'a');
    console.log(
      `      from the end ferry migrate reported to the guest running with no migration left: ${(performance.now() - endedAt).toFixed(0)} ms`,
    );
  });

  /**
   * Moves guest `name` to b with b's ownership directory made unwritable (by `spoil`, undone by
   * the function it returns) once the migration started: b cannot record its decision, so it must
   * neither commit nor leave the source waiting in doubt.
   */
  async function recordUnwritable(name: string, spoil: (ownership: string) => () => void): Promise<void> {
    createGuest(name, '32MiB', 'idle');
    await filled(name);
    const sourcePid = (await onA(name))!.pid!;
    const ownership = path.join(cluster.hostDir('b'), 'ownership');
    const migrate = startFerry(['migrate', name, '--to', 'b', '--bandwidth', '8MB', '--json'], cluster.env);
    await migrate.waitForOutput('stdout', /"type":"started"/, 30_000);
    const undo = spoil(ownership);
    try {
      const end = await migrate.ended;
      const endedAt = performance.now();
      const report = jsonLines(end.stdout).at(-1)!;
      assert.equal(end.status, 1, end.stderr);
      assert.equal(report.ok, false);
      assert.equal(await settled(name), 'a');
      console.log(
        `      ${report.error.message.slice(0, 90)}...; from the report to the guest running on a with no migration left: ${(performance.now() - endedAt).toFixed(0)} ms`,
      );
      assert.equal((await onA(name))!.pid, sourcePid, 'the same guest process runs on');
      assert.equal(existsSync(path.join(cluster.hostDir('b'), 'guests', name)), false, 'b has no copy left');
      await agents.b!.waitForLog(/cannot record the commit decision: the incoming guest is aborted/, 5000);
    } finally {
      undo();
    }
  }

  it('a read-only state directory at the destination when it records its decision: no commit, the source resumes at once', async function () {
    await recordUnwritable('ro6', (ownership) => {
      // Immutable: even root cannot create a file in it (permission bits do not stop root).
      execFileSync('chattr', ['+i', ownership]);
      return () => execFileSync('chattr', ['-i', ownership]);
    });
  });

  it('a full disk at the destination when it records its decision: no commit, the source resumes at once', async function () {
    const ownership = path.join(cluster.hostDir('b'), 'ownership');
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', ownership], { stdio: 'pipe' });
    } catch (err) {
      console.log(`      skipped: cannot mount a small tmpfs to fill (${(err as Error).message.split('\n')[0]})`);
      this.skip();
    }
    try {
      await recordUnwritable('df7', (dir) => {
        try {
          execFileSync('dd', ['if=/dev/zero', `of=${path.join(dir, 'filler')}`, 'bs=4k'], { stdio: 'pipe' });
        } catch {
          // dd ends with ENOSPC: the disk is full, which is the point
        }
        return () => {};
      });
    } finally {
      execFileSync('umount', [ownership]);
    }
  });

  /**
   * A backup of host `host`'s state files (guest records and ownership records, as a backup of the
   * state directory taken now would hold them); `restore()` puts them back in place of the current
   * ones, the host's agent stopped. The guest processes' own directories are left alone: a guest
   * process that runs keeps its socket.
   */
  function backUpState(host: string): { restore(): void } {
    const dir = cluster.hostDir(host);
    const backup = mkdtempSync(path.join(os.tmpdir(), 'ferry-state-backup-'));
    const stateFiles = (root: string) => [
      ...readdirSync(path.join(root, 'guests'))
        .filter((f) => f.endsWith('.json'))
        .map((f) => path.join('guests', f)),
      ...readdirSync(path.join(root, 'ownership')).map((f) => path.join('ownership', f)),
    ];
    cpSync(path.join(dir, 'guests'), path.join(backup, 'guests'), {
      recursive: true,
      filter: (f) => !f.includes(`guests${path.sep}`) || f.endsWith('.json'),
    });
    cpSync(path.join(dir, 'ownership'), path.join(backup, 'ownership'), { recursive: true });
    return {
      restore() {
        for (const f of stateFiles(dir)) rmSync(path.join(dir, f));
        for (const f of stateFiles(backup)) cpSync(path.join(backup, f), path.join(dir, f), { preserveTimestamps: true });
        rmSync(backup, { recursive: true, force: true });
      },
    };
  }

  it("a source's state directory restored from before a committed move: its copy is listed stale, never picked, and refused as a destination until removed", async function () {
    createGuest('s8', '32MiB', 'idle');
    await filled('s8');
    const before = backUpState('a');
    ferryOk(['migrate', 's8', '--to', 'b'], cluster.env);
    assert.equal(await settled('s8'), 'b');
    const runningPid = (await whereabouts('s8')).get('b')!.pid;
    await agents.a!.stop();
    before.restore();
    agents.a = await cluster.startAgent('a');

    const listed = ferryOk(['vm', 'list', '--json'], cluster.env);
    const copies = jsonLines(listed.stdout).filter((l) => l.name === 's8');
    assert.deepEqual(
      copies.map((l) => [l.host, l.state, l.generation, l.stale]),
      [
        ['a', 'stopped', 0, true],
        ['b', 'running', 1, false],
      ],
    );
    const table = ferryOk(['vm', 'list'], cluster.env);
    assert.match(table.stdout, /s8\s+a\s+stopped \(stale\)/);
    assert.match(table.stderr, /guest s8 on a is a stale copy \(generation 0; b holds generation 1\).*ferry vm destroy s8 --host a/);
    // Every command that finds the guest finds b's copy, whatever order the hosts answer in.
    const shown = jsonLines(ferryOk(['vm', 'show', 's8', '--json'], cluster.env).stdout).at(-1)!;
    assert.equal(shown.guest.host, 'b');

    const back = ferry(['migrate', 's8', '--to', 'a', '--json'], cluster.env);
    assert.equal(back.status, 1, back.stderr);
    const refusal = jsonLines(back.stdout).at(-1)!;
    assert.equal(refusal.error.code, 'ERR_FERRY_REFUSED');
    assert.match(refusal.error.message, /host a holds a stale copy of guest "s8" \(stopped, generation 0; the guest is at generation 1\)/);
    assert.match(refusal.error.message, /`ferry vm destroy s8 --host a`/);
    const after = await whereabouts('s8');
    assert.equal(after.get('b')!.pid, runningPid, 'the refusal changed nothing on b');
    assert.equal(after.get('a')!.state, 'stopped', 'nor on a');

    ferryOk(['vm', 'destroy', 's8', '--host', 'a'], cluster.env);
    assert.equal((await whereabouts('s8')).get('b')!.pid, runningPid, "destroying a's stale copy leaves b's alone");
    ferryOk(['migrate', 's8', '--to', 'a'], cluster.env);
    assert.equal(await settled('s8'), 'a');
    assert.equal((await onA('s8'))!.generation, 2);
  });

  it("a destination's state directory restored from before its commit record: the restarted agent keeps the guest its process committed", async function () {
    createGuest('t9', '32MiB', 'idle');
    await filled('t9');
    await agents.b!.stop();
    const b = (agents.b = await cluster.startAgent('b', [], { fault: 'destination:before-commit-record@stop' }));
    const migrate = startFerry(['migrate', 't9', '--to', 'b', '--json'], cluster.env);
    await waitUntil(() => processState(b.process.pid!) === 'T', 60_000, 'the destination agent to stop at its crash point');
    const { migrationId } = await ask(c, 'a', 'migration.outgoing', { guest: 't9' });
    const before = backUpState('b');
    process.kill(b.process.pid!, 'SIGCONT');
    assert.equal((await migrate.ended).status, 0);
    assert.equal(await settled('t9'), 'b');
    const runningPid = (await whereabouts('t9')).get('b')!.pid;

    await agents.b!.stop();
    before.restore();
    const decisionFile = path.join(cluster.hostDir('b'), 'ownership', `${migrationId}.decision.json`);
    assert.equal(existsSync(decisionFile), false, 'the restored state has no commit record');
    agents.b = await cluster.startAgent('b');
    await agents.b.waitForLog(/the state directory is older than the guest process/, 5000);
    assert.equal(await settled('t9'), 'b');
    assert.equal((await whereabouts('t9')).get('b')!.pid, runningPid, 'the same guest process runs on');
    assert.equal(JSON.parse(readFileSync(decisionFile, 'utf8')).decision, 'committed');
    const record = JSON.parse(readFileSync(path.join(cluster.hostDir('b'), 'guests', 't9.json'), 'utf8'));
    assert.equal(record.incoming, undefined, "the guest is b's again in its record");
  });

  it("a source's state directory restored from before its fence: the returning destination's claim is refused, since the guest runs on the source", async function () {
    const { dead: crashed } = await dieAt('destination:after-commit-record');
    createGuest('u10', '32MiB', 'dirty:4MB');
    await filled('u10');
    const sourcePid = (await onA('u10'))!.pid!;
    const migrate = startFerry(['migrate', 'u10', '--to', 'b', '--json'], cluster.env);
    const { migrationId } = await destinationGone('u10', crashed);
    const beforeFence = backUpState('a');
    const fenced = ferry(['resolve', 'u10', '--destination-lost', '--i-have-powered-off-the-destination', '--json'], cluster.env);
    assert.equal(fenced.status, 0, fenced.stderr);
    assert.equal((await migrate.ended).status, 1);
    const fence = path.join(cluster.hostDir('a'), 'ownership', `${migrationId}.fenced.json`);
    await agents.a!.stop();
    beforeFence.restore();
    assert.equal(existsSync(fence), false, 'the restored state has no fence');
    agents.a = await cluster.startAgent('a');

    agents.b = await cluster.startAgent('b');
    await agents.a.waitForLog(/refused the claim of a commit: the guest runs here/, 15_000);
    await agents.b.waitForLog(/operator settled the migration without this host/, 5000);
    await waitUntil(() => !existsSync(path.join(cluster.hostDir('b'), 'guests', 'u10')), 10_000, "b's copy to go");
    assert.equal(await settled('u10'), 'a');
    assert.equal((await onA('u10'))!.pid, sourcePid, 'the same guest process runs on');
    assert.equal(JSON.parse(readFileSync(fence, 'utf8')).migrationId, migrationId, 'the fence is recorded again');
  });
});
