/**
 * `ferry demo` runs to completion with nothing set up, and leaves nothing behind: no agent, guest
 * or QEMU process, no temporary directory — also when interrupted with SIGINT half-way. Both of its
 * guests: the synthetic one, which a machine without QEMU gets (FERRY_QEMU pointing nowhere stands
 * in for one), and the QEMU virtual machine running ferry's test guest, whose console on the
 * destination shows it kept running with its memory intact (skipped, saying why, without QEMU).
 * Smaller guests than the synthetic default of 1 GiB keep the suite quick on a shared machine.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { resolveQemu } from '../../src/guest/qemu/probe.js';
import { ferryAsync, startFerry } from '../support/cli.js';
import { jsonLines } from '../support/json-output.js';
import { processesMentioning } from '../support/processes.js';

const NO_QEMU = { FERRY_QEMU: '/nonexistent/qemu-system-x86_64' };

describe('e2e: ferry demo', function () {
  const dirs: string[] = [];
  after(function () {
    // Should there be leftovers, do not leave them to the next suite.
    for (const d of dirs) for (const pid of processesMentioning(d)) process.kill(pid, 'SIGKILL');
  });

  it('without QEMU: runs an encrypted migration of a synthetic guest between two agents it starts, says why synthetic, and removes everything', async function () {
    const r = await ferryAsync(['demo', '--memory', '128MiB', '--json'], NO_QEMU);
    assert.equal(r.status, 0, r.stderr);
    const lines = jsonLines(r.stdout);
    const dir = lines[0]!.dir as string;
    dirs.push(dir);
    assert.equal(lines[0]!.type, 'demo');
    assert.deepEqual(lines[1], {
      type: 'choice',
      driver: 'synthetic',
      reason:
        'a synthetic guest (a ferry process with real memory and a workload), since this machine runs no QEMU guests: FERRY_QEMU=/nonexistent/qemu-system-x86_64 is not an executable file',
    });
    const result = lines.pop()!;
    assert.equal(result.ok, true);
    assert.equal(result.mode, 'encrypted');
    assert.equal(result.from, 'a');
    assert.equal(result.to, 'b');
    assert.equal(existsSync(dir), false, `${dir} removed`);
    assert.deepEqual(processesMentioning(dir), []);
  });

  it('with QEMU: moves the test guest, and its console on the destination shows it kept running with its memory intact', async function () {
    const { missing } = resolveQemu();
    if (missing) {
      console.log(`      skipped: ${missing}`);
      this.skip();
    }
    const r = await ferryAsync(['demo']);
    const dir = /^ferry demo: a cluster in (\S+) /m.exec(r.stderr)?.[1];
    if (dir) dirs.push(dir);
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stderr,
      /the guest: a QEMU virtual machine running ferry's test guest, since this machine runs QEMU guests \(QEMU \d+\.\d+\.\d+ on (KVM|TCG)\)/,
    );
    assert.match(r.stderr, /guest "demo" on host a: 256 MiB memory, 1 CPU, pc-i440fx-[\d.]+, (KVM|TCG)/);
    assert.match(r.stdout, /^demo moved a -> b, encrypted/m);
    assert.match(r.stderr, /b's console since the guest arrived/);
    const kept =
      /the guest kept running: its clock went on \(tick (\d+) on a, tick (\d+) on b\), and check (\d+), all of it on b, found all (\d+) pages it fills as it last wrote them/.exec(
        r.stderr,
      );
    assert.ok(kept, r.stderr);
    assert.ok(Number(kept[2]) > Number(kept[1]), 'the clock went on');
    assert.match(r.stderr, new RegExp(`^ {4}check ${kept[3]} ok pages=${kept[4]}$`, 'm'));
    assert.doesNotMatch(r.stderr, /FAIL|failed pages/);
    assert.equal(existsSync(dir!), false, `${dir} removed`);
    assert.deepEqual(processesMentioning(dir!), []);
  });

  it('--driver qemu on a machine without QEMU: refused with exit 1, saying why, and nothing left', async function () {
    const r = await ferryAsync(['demo', '--driver', 'qemu', '--json'], NO_QEMU);
    assert.equal(r.status, 1, r.stderr);
    assert.match(
      r.stderr,
      /ferry: --driver qemu: this machine cannot run QEMU guests: FERRY_QEMU=\/nonexistent\/qemu-system-x86_64 is not an executable file \[ERR_FERRY_REFUSED\]/,
    );
    const dir = jsonLines(r.stdout)[0]!.dir as string;
    dirs.push(dir);
    assert.equal(existsSync(dir), false, `${dir} removed`);
    assert.deepEqual(processesMentioning(dir), []);
  });

  it('cleans up when interrupted with SIGINT during the migration', async function () {
    const child = startFerry(['demo', '--driver', 'synthetic', '--memory', '256MiB', '--workload', 'kv:get=1000,set=20000', '--json']);
    const [demo] = await child.waitForOutput('stdout', /^.*"type":"demo".*\n/m, 100_000);
    const dir = (JSON.parse(demo) as { dir: string }).dir;
    dirs.push(dir);
    await child.waitForOutput('stdout', /"type":"started"/, 100_000);
    assert.ok(processesMentioning(dir).length >= 3, 'two agents and a guest run (so the check below can fail)');
    child.process.kill('SIGINT');
    const { status: code } = await child.ended;
    assert.equal(code, 1, child.stderr());
    assert.match(child.stderr(), /interrupted by SIGINT; everything the demo made is removed/);
    assert.equal(existsSync(dir), false, `${dir} removed`);
    assert.deepEqual(processesMentioning(dir), []);
  });
});
