/**
 * `ferry bench migrate` as a user runs it (needs `npm run build`, which `npm test` does), with
 * every guest shrunk by the hidden --memory-scale and the kv rate by --kv-scale, so the whole path
 * runs — a cluster of real agents, guests made and moved over the control API, QEMU's migration
 * when QEMU is installed — in seconds. Speeds are not asserted; bytes and outcomes are. Also: it
 * leaves no process or directory behind, after success and after SIGINT.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { computeRatios, type FerryRun, type ScenarioReport } from '../../src/bench/migrate.js';
import { qemuMissing } from '../../src/bench/qemu-migration.js';
import { ferry, startFerry } from '../support/cli.js';
import { processesMentioning } from '../support/processes.js';

const TINY = ['--memory-scale', '0.005', '--kv-scale', '0.02'];

const clusterDir = (stderr: string): string => {
  const m = /\(in (\S+)\)/.exec(stderr);
  assert.ok(m, `no cluster directory in the progress lines: ${stderr}`);
  return m[1]!;
};

describe('ferry bench migrate', function () {
  it('gives the idle ratio per direction (ratio of medians) and over both as their geometric mean', function () {
    const run = (mode: 'encrypted' | 'plain', direction: string, totalMs: number): FerryRun => ({
      mode,
      direction,
      ok: true,
      error: null,
      totalMs,
      switchoverMs: 10,
      bytesSent: 1,
      wireFraction: 1,
      passes: 2,
      throughput: 1,
      maxThrottlePercent: 0,
      opsPerSecondBefore: 0,
      sourceCpuSeconds: 1,
      destinationCpuSeconds: 1,
      sourceSystemCpuSeconds: 0,
      destinationSystemCpuSeconds: 0,
    });
    // The full run of 2026-11-30 22:40 (bench/results/migrate-2026-11-30-night-abba-2240.json), in the order it ran (ABBA).
    const idle: ScenarioReport = {
      name: 'idle-10g',
      description: '',
      memoryBytes: 1,
      workload: 'idle',
      maxBytesPerSecond: null,
      skipped: null,
      unmeasured: [],
      runs: [
        run('encrypted', 'a→b', 4494),
        run('encrypted', 'b→a', 4249),
        run('plain', 'a→b', 4304),
        run('plain', 'b→a', 3999),
        run('plain', 'a→b', 4397),
        run('plain', 'b→a', 3837),
        run('encrypted', 'a→b', 4565),
        run('encrypted', 'b→a', 3826),
      ],
    };
    const r = computeRatios([idle]);
    const ab = (4494 + 4565) / (4304 + 4397);
    const ba = (4249 + 3826) / (3999 + 3837);
    assert.ok(Math.abs(r.idleEncryptedOverPlainTimeByDirection['a→b']! - ab) < 1e-12);
    assert.ok(Math.abs(r.idleEncryptedOverPlainTimeByDirection['b→a']! - ba) < 1e-12);
    assert.ok(Math.abs(r.idleEncryptedOverPlainTime! - Math.sqrt(ab * ba)) < 1e-12);
    assert.equal(r.ferryOverQemuPlainTime, null, 'no loopback scenario, no QEMU ratio');
  });

  it('runs every scenario tiny and prints one JSON object with runs, QEMU figures and ratios', function () {
    this.timeout(180_000);
    const r = ferry(['bench', 'migrate', '--json', ...TINY], {}, { timeoutMs: 170_000 });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1, 'exactly one line on stdout');
    const result = JSON.parse(lines[0]!);
    assert.equal(result.ok, true);
    const names = result.scenarios.map((s: { name: string }) => s.name);
    assert.deepEqual(names, ['idle-10g', 'kv', 'fresh-8g', 'qemu-loopback']);
    for (const s of result.scenarios) {
      if (s.skipped) continue;
      const modes = s.runs.map((x: { mode: string }) => x.mode);
      // Two rounds by default, the second with the modes the other way round (ABBA).
      const abba = ['encrypted', 'encrypted', 'plain', 'plain', 'plain', 'plain', 'encrypted', 'encrypted'];
      assert.deepEqual(modes, s.name === 'qemu-loopback' ? ['encrypted', 'encrypted', 'encrypted', 'encrypted'] : abba, s.name);
      // Each mode moves the guest a→b and back, after a warm-up there and back that is not counted.
      assert.deepEqual(
        s.runs.map((x: { direction: string }) => x.direction),
        modes.map((_: string, i: number) => (i % 2 ? 'b→a' : 'a→b')),
      );
      assert.deepEqual(
        s.unmeasured.map((x: { direction: string }) => x.direction),
        ['a→b', 'b→a'],
        s.name,
      );
      assert.ok(
        s.unmeasured.every((x: { ok: boolean }) => x.ok),
        s.name,
      );
      for (const run of s.runs)
        assert.ok(run.destinationSystemCpuSeconds >= 0 && run.destinationSystemCpuSeconds <= run.destinationCpuSeconds);
      for (const run of s.runs) {
        assert.equal(run.ok, true, `${s.name} ${run.mode}: ${run.error}`);
        assert.ok(run.totalMs > 0 && run.switchoverMs >= 0);
        // Each side's guest process did the work of moving the guest: it spent CPU on it.
        assert.ok(
          run.sourceCpuSeconds > 0 && run.destinationCpuSeconds > 0,
          `${s.name} ${run.mode}: ${run.sourceCpuSeconds} / ${run.destinationCpuSeconds}`,
        );
        // Memory written by the workload crosses in full; a fresh guest's zero pages do not cross.
        if (s.workload === 'idle') assert.ok(run.wireFraction >= 1, `${s.name}: ${run.wireFraction}`);
        if (s.name === 'fresh-8g') assert.ok(run.wireFraction < 0.01, `fresh: ${run.wireFraction}`);
      }
    }
    const q = result.scenarios.find((s: { name: string }) => s.name === 'qemu-loopback');
    if (qemuMissing() === null) {
      // After an unmeasured warm-up, two rounds in ABBA order.
      assert.deepEqual(
        q.qemuUnmeasured.map((x: { mode: string }) => x.mode),
        ['plain'],
      );
      assert.deepEqual(
        q.qemu.map((x: { mode: string }) => x.mode),
        ['plain', 'multifd-tls', 'tls', 'tls', 'multifd-tls', 'plain'],
      );
      for (const x of q.qemu) {
        assert.equal(x.status, 'completed');
        assert.ok(x.transferredBytes >= q.memoryBytes, `${x.mode}: ${x.transferredBytes}`);
      }
      assert.equal(typeof result.ratios.ferryOverQemuMultifdTlsTime, 'number');
    } else {
      assert.equal(q.qemuSkipped, qemuMissing());
      assert.equal(result.ratios.ferryOverQemuPlainTime, null);
    }
    assert.equal(typeof result.ratios.idleEncryptedOverPlainTime, 'number');
    assert.equal(typeof result.ratios.idleEncryptedOverPlainTimeByDirection['a→b'], 'number');
    assert.equal(typeof result.ratios.idleEncryptedOverPlainTimeByDirection['b→a'], 'number');
    assert.equal(result.ratios.kvAllWithinMaxDowntime === null, false);
    assert.equal(result.machine.loadBefore.length, 3);
    const dir = clusterDir(r.stderr);
    assert.equal(existsSync(dir), false, `${dir} left behind`);
    assert.deepEqual(processesMentioning(dir), []);
  });

  it('on SIGINT stops its agents and guests, removes its files, and exits non-zero', async function () {
    this.timeout(60_000);
    const child = startFerry(['bench', 'migrate', '--scenario', 'kv', ...TINY]);
    await child.waitForOutput('stderr', /creating the guest/, 40_000);
    child.process.kill('SIGINT');
    const { status: code, stderr } = await child.ended;
    assert.notEqual(code, 0, stderr);
    assert.match(stderr, /SIGINT/);
    const dir = clusterDir(stderr);
    assert.equal(existsSync(dir), false, `${dir} left behind`);
    assert.deepEqual(processesMentioning(dir), []);
  });

  it('refuses bad flags with a usage error', function () {
    for (const args of [
      ['--runs', '0'],
      ['--scenario', 'nope'],
      ['--memory-scale', '2'],
      ['--kv-scale', '0'],
    ]) {
      const r = ferry(['bench', 'migrate', ...args]);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.status} ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /cluster: CA/, 'nothing was started');
    }
  });
});
