/**
 * Faults during the migration of a QEMU guest, end to end: the CLI as a process, real agents,
 * real QEMU running ferry's test guest. A cancel from another shell, an agent SIGKILLed (and
 * restarted, as an operator would), the first migration network cut, a tampered stream, a crash
 * between the source QEMU's completion and the commit, a destination QEMU that stops answering or
 * is killed, a destination guest process killed (its QEMU orphaned), QMP socket files removed, and a source QEMU that crashes. After each the guest runs
 * as exactly one QEMU, on the host the agents' rule says (docs/qemu.md, "Exactly one running
 * copy"), its memory checks passing there, and the other host keeps no QEMU, guest process,
 * directory or socket of it; a guest whose QEMU crashed runs nowhere and is reported so. Skipped,
 * saying why, without qemu-system-x86_64.
 */
import assert from 'node:assert/strict';
import { existsSync, rmSync, watch } from 'node:fs';
import path from 'node:path';
import { HEADER_BYTES } from '../../src/channel/wire.js';
import { ferry, startFerry, type FerryChild } from '../support/cli.js';
import { jsonLines } from '../support/json-output.js';
import { QMP_SOCKET } from '../../src/guest/qemu/argv.js';
import { migrateOutput, processesIn, QemuCluster, qemusOf, socketsUnder, useQemuCluster } from '../support/qemu-cluster.js';
import { CuttableRelay } from '../support/relay.js';
import { flipBit, TamperRelay } from '../support/tamper-relay.js';
import { waitUntil } from '../support/wait.js';
import { alive, processState } from '../support/processes.js';

/** A pass event once this much went over: the transfer is well under way and far from its end. */
const UNDER_WAY = /"type":"pass","pass":1,"bytesSent":([4-9]\d{6}|[1-3]\d{7})\b/;

describe('e2e: faults during the migration of a QEMU guest (real agents, real QEMU)', function () {
  this.timeout(300_000);
  let q: QemuCluster;
  // b has two migration networks, for the failover test.
  useQemuCluster({ a: {}, b: { networks: 2 } }, (cluster) => (q = cluster));

  /** A test guest on a, smaller than the moves' own (a fault needs a transfer under way, not a long one). */
  function create(name: string): Promise<void> {
    return q.create(name, 'a', { memory: '64MiB', append: 'fill=32 window=4 rate=max' });
  }

  /** `ferry migrate NAME --to b --json ARGS`, started; resolves once its transfer is under way. */
  async function migrating(name: string, args: string[] = ['--bandwidth', '8MiB/s']): Promise<FerryChild> {
    const child = startFerry(['migrate', name, '--to', 'b', '--json', ...args], q.env);
    await child.waitForOutput('stdout', UNDER_WAY, 60_000);
    return child;
  }

  /** The guest's source QEMU and guest process, which a move that failed must leave running as they were. */
  async function sourceOf(name: string): Promise<{ qemu: number; process: number }> {
    return { qemu: q.qemu(name).pid, process: (await q.whereabouts(name)).found.get('a')!.pid! };
  }

  /** The pid of the QEMU that the migration of `name` started on b. */
  function destinationQemu(name: string): number {
    const destination = qemusOf(q.uuid(name)).find((p) => p.dir === q.guestDir('b', name));
    assert.ok(destination, `the destination QEMU of ${name} runs`);
    return destination.pid;
  }

  async function stayedOnA(name: string, before: { qemu: number; process: number }): Promise<void> {
    assert.equal(await q.runsOnlyOn(name, 'a'), 'a');
    assert.deepEqual(await sourceOf(name), before, 'the same QEMU and guest process run on');
    await q.checksPass('a', name, 1);
  }

  it('cancelled mid-way by `ferry cancel` from another process: exit 1, the guest running on the source, nothing at the destination', async function () {
    await create('c1');
    const before = await sourceOf('c1');
    // Slow enough that the pass outlasts a CLI's start on a loaded host: the cancel must find the move running.
    const child = await migrating('c1', ['--bandwidth', '2MiB/s']);
    const cancel = ferry(['cancel', 'c1', '--json'], q.env);
    assert.equal(cancel.status, 0, cancel.stderr);
    assert.equal(jsonLines(cancel.stdout).at(-1)!.outcome, 'aborted');
    const m = migrateOutput(await child.ended);
    assert.equal(m.status, 1, m.stderr);
    assert.equal(m.result.ok, false);
    assert.equal(m.result.error.code, 'ERR_FERRY_ABORTED');
    assert.match(m.result.error.message, /^cancelled by the operator; guest "c1" runs on a/);
    assert.ok(!m.events.some((e) => e.type === 'switch-over'), 'cancelled before the switch-over');
    await stayedOnA('c1', before);
  });

  it('destination agent SIGKILLed mid-transfer, then restarted: one running copy, nothing left on the other host', async function () {
    await create('d1');
    const child = await migrating('d1');
    await q.killAgent('b');
    await q.restartAgent('b');
    const m = migrateOutput(await child.ended);
    const home = await q.runsOnlyOn('d1', null);
    console.log(`      ferry migrate exited ${m.status} (${m.result.error?.code ?? 'moved'}); the guest runs on ${home}`);
    assert.equal(m.status, home === 'b' ? 0 : 1, m.stderr);
    await q.checksPass(home, 'd1', 1);
  });

  it('source agent SIGKILLed mid-transfer, then restarted: one running copy, nothing left on the other host', async function () {
    await create('s1');
    const child = await migrating('s1');
    await q.killAgent('a');
    // The CLI reconnects and follows the move to its end: the agent comes back while it waits.
    await q.restartAgent('a');
    const m = migrateOutput(await child.ended);
    const home = await q.runsOnlyOn('s1', null);
    console.log(`      ferry migrate exited ${m.status} (${m.result.error?.code}: ${m.result.error?.message}); the guest runs on ${home}`);
    // Whether the CLI followed the move to its end or gave it up (the destination then records "not committed"), it says where the guest is.
    assert.equal(m.status, home === 'b' ? 0 : 1, m.stderr);
    await q.checksPass(home, 's1', 1);
  });

  it('the first migration network cut mid-transfer: the move carries on over the second and commits', async function () {
    const listen = await q.advertise('b', 0, null);
    const relay = new CuttableRelay(listen);
    try {
      await q.advertise('b', 0, await relay.listen());
      await create('n1');
      const child = await migrating('n1', ['--bandwidth', '8MiB/s', '--streams', '2']);
      assert.ok(relay.accepted >= 1, 'the move began on the first network');
      relay.partitioned = true;
      relay.cut();
      const m = migrateOutput(await child.ended);
      assert.equal(m.status, 0, m.stderr);
      assert.equal(m.result.ok, true);
      assert.equal(relay.cuts, 1);
      // Said as it happened (an event, a warning on stderr) and in the result: from which network to which.
      const failover = m.events.find((e) => e.type === 'failover' && e.side === 'source');
      assert.ok(failover, `a failover event among ${m.events.map((e) => e.type).join(' ')}`);
      assert.match(m.stderr, /migration network \S+ lost; carrying on over \S+/);
      assert.equal(m.result.failovers.length, 1, JSON.stringify(m.result.failovers));
      assert.deepEqual(m.result.failovers[0], { from: failover.from, to: failover.to, bytesResent: failover.bytesResent });
      assert.notEqual(failover.from, failover.to);
      assert.equal(await q.runsOnlyOn('n1', 'b'), 'b');
      await q.checksPass('b', 'n1', 1);
    } finally {
      relay.close();
      await q.advertise('b', 0, null);
    }
  });

  it('a tampered stream (one bit flipped on the data path) is refused: exit 1, ERR_FERRY_AUTH, the guest on the source', async function () {
    const listen = await q.advertise('b', 0, null);
    let flipped = false;
    // One bit of the payload of the 40th frame of the first connection (well into the RAM), once.
    const relay = await new TamperRelay(listen, (frame) => {
      if (flipped || frame.conn !== 0 || frame.index < 40 || frame.bytes.length < HEADER_BYTES + 64) return [frame.bytes];
      flipped = true;
      return [flipBit(frame.bytes, HEADER_BYTES + 32, 3)];
    }).start();
    try {
      await q.advertise('b', 0, relay.address);
      await create('t1');
      const before = await sourceOf('t1');
      const r = await startFerry(['migrate', 't1', '--to', 'b', '--json', '--bandwidth', '16MiB/s'], q.env).ended;
      const m = migrateOutput(r);
      assert.ok(flipped, 'the relay flipped a bit');
      assert.equal(m.status, 1, m.stderr);
      assert.equal(m.result.ok, false);
      assert.match(m.stdout + m.stderr, /ERR_FERRY_AUTH/, 'the refusal is reported as an authentication failure');
      await stayedOnA('t1', before);
    } finally {
      relay.cut();
      await q.advertise('b', 0, null);
    }
  });

  it('the destination agent SIGKILLed after the source QEMU completed (both paused, --verify digests running), then restarted: one running copy', async function () {
    await create('v1');
    // The source hashes its RAM (--verify) into a named pipe in its guest directory once its QEMU
    // completed: the moment both QEMUs are paused and neither host has decided.
    const dir = q.guestDir('a', 'v1');
    let killed: Promise<void> | null = null;
    const watcher = watch(dir, (_event, file) => {
      if (!killed && file?.startsWith('.ram-digest-')) killed = q.killAgent('b');
    });
    let child: FerryChild;
    try {
      child = startFerry(['migrate', 'v1', '--to', 'b', '--json', '--verify'], q.env);
      await waitUntil(
        () => killed !== null,
        60_000,
        () => `the source QEMU to complete: ${child.stdout()}`,
      );
    } finally {
      watcher.close();
    }
    await killed;
    await q.restartAgent('b');
    const m = migrateOutput(await child.ended);
    console.log(
      `      ferry migrate exited ${m.status}: ${m.result.error ? `${m.result.error.code}: ${m.result.error.message}` : 'moved'}`,
    );
    let home: string;
    try {
      home = await q.runsOnlyOn('v1', null, 30_000);
    } catch {
      // The coordinator gave up and the source still waits in doubt: the operator's resolve settles it.
      const resolve = ferry(['resolve', 'v1'], q.env);
      console.log(`      ferry resolve v1 exited ${resolve.status}: ${resolve.stdout.trim()} ${resolve.stderr.trim()}`);
      home = await q.runsOnlyOn('v1', null);
    }
    console.log(`      the guest runs on ${home}`);
    await q.checksPass(home, 'v1', 1);
  });

  it('the destination QEMU stops answering QMP (SIGSTOP mid-transfer): the move ends with the guest on the source, no QEMU left at the destination', async function () {
    await create('p1');
    const before = await sourceOf('p1');
    const child = await migrating('p1');
    process.kill(destinationQemu('p1'), 'SIGSTOP');
    const stoppedAt = performance.now();
    const m = migrateOutput(await child.ended);
    const tookMs = performance.now() - stoppedAt;
    console.log(
      `      the move ended ${(tookMs / 1000).toFixed(1)} s after the SIGSTOP: ${m.result.error?.code}: ${m.result.error?.message}`,
    );
    assert.equal(m.status, 1, m.stderr);
    assert.equal(m.result.ok, false);
    // The destination's reason, or the source QEMU's own failure when the closed stream reached it
    // before the destination's ABORT did (a race the source does not yet wait out).
    assert.match(
      m.result.error.message,
      /the destination gave up: QEMU did not answer|QEMU's migration failed/,
      "the destination's reason reaches the operator",
    );
    await stayedOnA('p1', before);
    assert.equal(qemusOf(q.uuid('p1')).length, 1, 'the stopped QEMU is gone');
  });

  it('the destination QEMU SIGKILLed mid-transfer: exit 1, the guest running on the source as it was, nothing at the destination', async function () {
    await create('k1');
    const before = await sourceOf('k1');
    const child = await migrating('k1');
    process.kill(destinationQemu('k1'), 'SIGKILL');
    const m = migrateOutput(await child.ended);
    assert.equal(m.status, 1, m.stderr);
    // Whichever saw it first: the destination (its QEMU exited) or the source QEMU (its stream closed).
    assert.match(m.result.error.message, /QEMU/, m.result.error.message);
    await stayedOnA('k1', before);
  });

  it("the destination's guest process SIGKILLed mid-transfer (its QEMU orphaned): exit 1, the guest on the source, no QEMU left at the destination", async function () {
    await create('o1');
    const before = await sourceOf('o1');
    const child = await migrating('o1');
    const qemu = destinationQemu('o1');
    const guestProcesses = processesIn(q.guestDir('b', 'o1')).filter((pid) => pid !== qemu);
    assert.equal(guestProcesses.length, 1, `one guest process of o1 on b: ${guestProcesses.join(', ')}`);
    process.kill(guestProcesses[0]!, 'SIGKILL');
    const m = migrateOutput(await child.ended);
    assert.equal(m.status, 1, m.stderr);
    await stayedOnA('o1', before);
    assert.equal(alive(qemu), false, 'the orphaned destination QEMU is gone');
  });

  it("the destination's guest process SIGKILLed when its QEMU holds the whole guest, before the commit record: exit 1, the guest on the source, that QEMU gone", async function () {
    await create('o2');
    const before = await sourceOf('o2');
    await q.agents.b!.stop('SIGTERM');
    const b = await q.restartAgent('b', { fault: 'destination:before-commit-record@stop' });
    const child = startFerry(['migrate', 'o2', '--to', 'b', '--json'], q.env);
    await waitUntil(
      () => processState(b.process.pid!) === 'T',
      120_000,
      () => `b's agent to stop before its commit record: ${child.stdout()}`,
    );
    const qemu = destinationQemu('o2');
    const guestProcesses = processesIn(q.guestDir('b', 'o2')).filter((pid) => pid !== qemu);
    assert.equal(guestProcesses.length, 1, `one guest process of o2 on b: ${guestProcesses.join(', ')}`);
    process.kill(guestProcesses[0]!, 'SIGKILL');
    b.process.kill('SIGCONT');
    const m = migrateOutput(await child.ended);
    assert.equal(m.status, 1, m.stderr);
    await stayedOnA('o2', before);
    assert.equal(alive(qemu), false, 'the orphaned destination QEMU is gone');
    await b.stop('SIGTERM');
    await q.restartAgent('b');
  });

  it("both QEMUs' QMP socket files removed mid-transfer: the move goes on over the QMP connections held, and commits", async function () {
    await create('q1');
    const child = await migrating('q1', ['--bandwidth', '16MiB/s']);
    for (const host of ['a', 'b']) {
      const socket = path.join(q.guestDir(host, 'q1'), QMP_SOCKET);
      assert.ok(existsSync(socket), `${socket} exists`);
      rmSync(socket);
    }
    const m = migrateOutput(await child.ended);
    assert.equal(m.status, 0, m.stderr);
    assert.equal(await q.runsOnlyOn('q1', 'b'), 'b');
    await q.checksPass('b', 'q1', 1);
  });

  it('the source QEMU crashes (SIGKILL) mid-transfer: reported as a crashed guest, stopped on the source, never resurrected on the destination', async function () {
    await create('x1');
    const child = await migrating('x1');
    const source = qemusOf(q.uuid('x1')).find((p) => p.dir === q.guestDir('a', 'x1'));
    assert.ok(source, 'the source QEMU runs');
    process.kill(source.pid, 'SIGKILL');
    const m = migrateOutput(await child.ended);
    console.log(`      ferry migrate exited ${m.status}: ${m.result.error?.code}: ${m.result.error?.message}`);
    assert.equal(m.status, 1, m.stderr);
    assert.equal(m.result.ok, false);
    assert.match(m.result.error.message, /QEMU .*exited/, 'the operator reads that the guest crashed');
    assert.doesNotMatch(m.result.error.message, /runs on a/, 'a crashed guest is not said to run on the source');
    // Settled: the source's agent has the guest, stopped; the destination has nothing of it, and no QEMU runs it anywhere.
    let seen = '';
    await waitUntil(
      async () => {
        const { found, unknown } = await q.whereabouts('x1');
        seen = JSON.stringify({
          found: [...found].map(([h, g]) => [h, g.state]),
          unknown,
          qemus: qemusOf(q.uuid('x1')),
          onA: processesIn(q.guestDir('a', 'x1')),
        });
        return (
          unknown.length === 0 &&
          found.size === 1 &&
          found.get('a')?.state === 'stopped' &&
          // Its guest process goes too, once it has told its agent how the migration ended.
          processesIn(q.guestDir('a', 'x1')).length === 0 &&
          processesIn(q.guestDir('b', 'x1')).length === 0 &&
          !existsSync(q.guestDir('b', 'x1'))
        );
      },
      30_000,
      () => `the crashed guest to be stopped on a and gone from b: ${seen}`,
    );
    assert.deepEqual(qemusOf(q.uuid('x1')), [], 'no QEMU runs the crashed guest');
    assert.deepEqual(socketsUnder(q.guestDir('b', 'x1')), [], 'no socket of it on b');
  });
});
