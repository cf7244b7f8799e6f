/**
 * `ferry bench migrate`: live migrations through real agents — a temporary cluster of two
 * `ferry host serve` processes on 127.0.0.1 (the demo's LocalCluster), guests created and moved
 * over the control API by the coordinator's own migrateGuest — in four scenarios with the goals
 * docs/performance.md states, encrypted and plain alternating, each mode measured moving the guest a→b and back b→a (after a
 * warm-up there and back), by default in two rounds whose order of modes is reversed in the second
 * (ABBA), and QEMU 7.2's own migration beside it on the same machine.
 * Figures are from one run and reported as ratios; the load average says how noisy it was.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Argv } from 'yargs';
import { FerryError } from '../errors.js';
import { attachGuest } from '../guest/index.js';
import type { GuestConfig, Workload } from '../guest/types.js';
import type { Cluster } from '../coordinator/cluster.js';
import { connectHost } from '../coordinator/connect.js';
import { migrateGuest } from '../coordinator/migrate.js';
import { formatBytes, formatDuration } from '../common/units.js';
import { defineCommand, type GlobalArgs } from '../cli/command.js';
import { LocalCluster } from '../cli/demo-cluster.js';
import type { Output } from '../cli/output.js';
import { availableMemory } from './machine.js';
import { median, ratio } from './stats.js';
import {
  makeQemuTlsDir,
  qemuMissing,
  runQemuMigration,
  writeRandomFile,
  type QemuMigrationResult,
  type QemuMode,
  type QemuProcess,
} from './qemu-migration.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
/** 10 Gb/s in bytes a second. */
const TEN_GBIT = 10e9 / 8;
const MAX_DOWNTIME_MS = 500;
const KV_GETS = 150_000;
const KV_SETS = 50_000;

export const SCENARIOS = ['idle-10g', 'kv', 'fresh-8g', 'qemu-loopback'] as const;
/** Run only when named: `kv-verify` measures what --verify costs a kv guest's switch-over. */
export const EXTRA_SCENARIOS = ['kv-verify'] as const;
export type ScenarioName = (typeof SCENARIOS)[number] | (typeof EXTRA_SCENARIOS)[number];
const VERIFY_KV_GETS = 20_000;
const VERIFY_KV_SETS = 5_000;

interface MigrateArgs {
  scenario?: string[];
  runs: number;
  'memory-scale': number;
  'kv-scale': number;
}

type Mode = 'encrypted' | 'plain';

export interface FerryRun {
  mode: Mode;
  /** The move was asked to verify (kv-verify); absent: it was not. */
  verify?: boolean;
  direction: string;
  ok: boolean;
  error: string | null;
  totalMs: number;
  switchoverMs: number | null;
  bytesSent: number;
  /** Bytes on the wire over the guest's memory size. */
  wireFraction: number;
  passes: number;
  throughput: number;
  maxThrottlePercent: number;
  /** The guest's operations a second just before the migration (kv). */
  opsPerSecondBefore: number | null;
  /**
   * CPU seconds (user + system, every thread) of the source and the destination guest process
   * over the migration, as each reported it; null when its agent did not have the figure.
   */
  sourceCpuSeconds: number | null;
  destinationCpuSeconds: number | null;
  /** Of those, the time in the kernel: socket copies and, at the destination, first-touch page faults. */
  sourceSystemCpuSeconds: number | null;
  destinationSystemCpuSeconds: number | null;
}

export interface ScenarioReport {
  name: ScenarioName;
  description: string;
  memoryBytes: number;
  workload: string;
  maxBytesPerSecond: number | null;
  skipped: string | null;
  runs: FerryRun[];
  /** The warm-up moves (plain, never counted): a→b, then b→a. */
  unmeasured: { direction: string; totalMs: number; ok: boolean }[];
  qemu?: QemuMigrationResult[];
  /** QEMU's warm-up migration (plain, not counted), as ferry's moves have theirs. */
  qemuUnmeasured?: { mode: QemuMode; totalMs: number }[];
  qemuSkipped?: string | null;
  /** kv: the rate asked for and the fraction of it used (1: not scaled down). */
  kvRate?: { gets: number; sets: number; scale: number };
}

const ok = (s: ScenarioReport | undefined, mode: Mode) => s?.runs.filter((r) => r.ok && r.mode === mode) ?? [];
const medianTotal = (s: ScenarioReport | undefined, mode: Mode, direction?: string) =>
  median(
    ok(s, mode)
      .filter((r) => direction === undefined || r.direction === direction)
      .map((r) => r.totalMs),
  );
const medianDestinationCpu = (s: ScenarioReport | undefined, mode: Mode) => median(ok(s, mode).map((r) => r.destinationCpuSeconds ?? NaN));

function scaled(bytes: number, scale: number): number {
  return Math.max(16 * MiB, Math.round((bytes * scale) / MiB) * MiB);
}

/** The cluster, its guests, QEMU processes and files of one bench run, and their removal. */
class Bench {
  readonly root = mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-migrate-'));
  readonly local = LocalCluster.create();
  private readonly qemus = new Set<QemuProcess>();
  cluster: Cluster | null = null;
  private guestCount = 0;
  private closing = false;

  constructor(private readonly progress: (line: string) => void) {}

  async start(): Promise<Cluster> {
    this.progress(`cluster: CA, hosts a and b, their agents on 127.0.0.1 (in ${this.local.root})`);
    this.cluster = await this.local.start(['a', 'b']);
    return this.cluster;
  }

  async call<T>(host: string, fn: (client: Awaited<ReturnType<typeof connectHost>>) => Promise<T>): Promise<T> {
    const client = await connectHost(this.cluster!, host);
    try {
      return await fn(client);
    } finally {
      client.close();
    }
  }

  /** Creates a guest on host a through the control API and waits until its workload's setup is done. */
  async createGuest(memoryBytes: number, workload: Workload): Promise<string> {
    const name = `bench${this.guestCount++}`;
    // disabled: each move then names its mode, plain (disabled) or encrypted (required, a stricter
    // --mode, which a move may take; a weaker one it may not).
    const config: GuestConfig = {
      name,
      driver: 'synthetic',
      memoryBytes,
      diskBytes: 0,
      workload,
      nic: 'virtio',
      encryptedMigration: 'disabled',
    };
    await this.call('a', (c) => c.call('guest.create', { config }, { timeoutMs: 10 * 60_000 }));
    // The agent does not report setup progress: ask the guest process itself, as its agent would.
    const guest = await attachGuest(path.join(this.local.root, 'host-a', 'guests', name));
    if (!guest) throw new FerryError('ERR_FERRY_INTERNAL', `guest ${name} does not answer on host a`);
    try {
      const deadline = performance.now() + 10 * 60_000;
      while (!(await guest.status()).workloadReady) {
        if (performance.now() > deadline) throw new FerryError('ERR_FERRY_TIMEOUT', `guest ${name}'s workload setup took over 10 minutes`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      guest.close();
    }
    return name;
  }

  async destroyGuest(name: string, host: string): Promise<void> {
    await this.call(host, (c) => c.call('guest.destroy', { name })).catch(() => {});
  }

  async opsPerSecond(name: string, host: string): Promise<number | null> {
    return (await this.call(host, (c) => c.call('guest.get', { name }))).opsPerSecond;
  }

  /** One migration through the agents; the guest's name and where it runs afterwards. */
  async migrate(
    name: string,
    from: string,
    to: string,
    mode: Mode,
    memoryBytes: number,
    maxBytesPerSecond: number | null,
    verify = false,
  ): Promise<FerryRun> {
    const opsPerSecondBefore = await this.opsPerSecond(name, from);
    let maxThrottlePercent = 0;
    const cluster = this.cluster!;
    const summary = await migrateGuest(
      {
        guest: name,
        cluster,
        from,
        to: { cluster, host: cluster.hosts.get(to)!, crossCluster: false, label: to },
        mode: mode === 'encrypted' ? 'required' : 'disabled',
        maxDowntimeMs: MAX_DOWNTIME_MS,
        verify,
        ...(maxBytesPerSecond ? { maxBytesPerSecond } : {}),
      },
      {
        onEvent: (e) => {
          if (e.type === 'throttle') maxThrottlePercent = Math.max(maxThrottlePercent, e.percent);
        },
      },
    );
    const r = summary.report;
    const [sourceCpu, destinationCpu] = await Promise.all([
      this.migrationCpu(from, summary.migrationId, null),
      r.ok ? this.migrationCpu(to, summary.migrationId, { name }) : null,
    ]);
    const unverified = verify && r.ok && r.verified !== true ? 'verify asked for, but the move reports no match' : null;
    return {
      mode,
      ...(verify ? { verify } : {}),
      direction: `${from}→${to}`,
      ok: r.ok && unverified === null,
      error: r.error ? `${r.error.code}: ${r.error.message}` : unverified,
      totalMs: r.totalMs,
      switchoverMs: r.switchoverMs,
      bytesSent: r.bytesSent,
      wireFraction: r.bytesSent / memoryBytes,
      passes: r.passes,
      throughput: summary.throughput,
      maxThrottlePercent,
      opsPerSecondBefore,
      sourceCpuSeconds: sourceCpu?.total ?? null,
      destinationCpuSeconds: destinationCpu?.total ?? null,
      sourceSystemCpuSeconds: sourceCpu?.system ?? null,
      destinationSystemCpuSeconds: destinationCpu?.system ?? null,
    };
  }

  /**
   * The CPU time one side's guest process spent on a migration. The source's agent keeps the
   * result; the destination's agent records the commit before its guest process has finished the
   * migration's farewells, so that figure comes from the guest process itself, a moment later.
   */
  async migrationCpu(
    host: string,
    migrationId: string,
    destination: { name: string } | null,
  ): Promise<{ total: number; system: number } | null> {
    const guest = destination ? await attachGuest(path.join(this.local.root, `host-${host}`, 'guests', destination.name)) : null;
    try {
      const deadline = performance.now() + 10_000;
      for (;;) {
        const result = guest
          ? await guest.migration().then(
              (m) => (m?.migrationId === migrationId ? m.result : null),
              () => null,
            )
          : await this.call(host, (c) => c.call('migration.status', { migrationId })).then(
              (s) => s.result,
              () => null,
            );
        if (result) return { total: (result.cpu.userMs + result.cpu.systemMs) / 1000, system: result.cpu.systemMs / 1000 };
        if (performance.now() > deadline) return null;
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      guest?.close();
    }
  }

  /** Registers a QEMU process for close(); one started after close() began is stopped at once. */
  track(q: QemuProcess): void {
    this.qemus.add(q);
    if (this.closing) void q.stop();
  }

  /** Throws once close() began (a signal), so no new step starts. */
  check(): void {
    if (this.closing) throw new FerryError('ERR_FERRY_ABORTED', 'the bench is stopping');
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.qemus].map((q) => q.stop()));
    await this.local.close();
    rmSync(this.root, { recursive: true, force: true });
  }
}

interface Plan {
  name: ScenarioName;
  description: string;
  memoryBytes: number;
  workload: Workload;
  workloadText: string;
  maxBytesPerSecond: number | null;
  modes: Mode[];
  /** Each mode's moves without and with --verify (default: without only). */
  verifyVariants?: boolean[];
}

function plans(scale: number, kvScale: number): Plan[] {
  const gets = Math.round(KV_GETS * kvScale);
  const sets = Math.round(KV_SETS * kvScale);
  return [
    {
      name: 'idle-10g',
      description: '4 GiB idle guest (memory fully written), link capped at 10 Gb/s',
      memoryBytes: scaled(4 * GiB, scale),
      workload: { kind: 'idle' },
      workloadText: 'idle',
      maxBytesPerSecond: TEN_GBIT,
      modes: ['encrypted', 'plain'],
    },
    {
      name: 'kv',
      description: `2 GiB kv guest at ${gets} GET + ${sets} SET a second, --max-downtime ${MAX_DOWNTIME_MS} ms`,
      memoryBytes: scaled(2 * GiB, scale),
      workload: { kind: 'kv', getsPerSecond: gets, setsPerSecond: sets },
      workloadText: `kv:get=${gets},set=${sets}`,
      maxBytesPerSecond: null,
      modes: ['encrypted', 'plain'],
    },
    // `dirty` at one page a second: the guest runs but leaves its memory (nearly) unwritten; `idle` would fill it.
    {
      name: 'fresh-8g',
      description: 'a fresh 8 GiB guest that never wrote its memory (dirty:4KB, one page a second)',
      memoryBytes: scaled(8 * GiB, scale),
      workload: { kind: 'dirty', bytesPerSecond: 4096 },
      workloadText: 'dirty:4KB',
      maxBytesPerSecond: null,
      modes: ['encrypted', 'plain'],
    },
    {
      name: 'qemu-loopback',
      description: '2 GiB idle guest of random data, unlimited on loopback, ferry encrypted beside QEMU 7.2',
      memoryBytes: scaled(2 * GiB, scale),
      workload: { kind: 'idle' },
      workloadText: 'idle',
      maxBytesPerSecond: null,
      modes: ['encrypted'],
    },
    {
      name: 'kv-verify',
      description: `1 GiB kv guest at ${VERIFY_KV_GETS} GET + ${VERIFY_KV_SETS} SET a second, encrypted, without and with --verify`,
      memoryBytes: scaled(GiB, scale),
      workload: { kind: 'kv', getsPerSecond: VERIFY_KV_GETS, setsPerSecond: VERIFY_KV_SETS },
      workloadText: `kv:get=${VERIFY_KV_GETS},set=${VERIFY_KV_SETS}`,
      maxBytesPerSecond: null,
      modes: ['encrypted'],
      verifyVariants: [false, true],
    },
  ];
}

async function runScenario(bench: Bench, plan: Plan, runs: number, progress: (line: string) => void): Promise<ScenarioReport> {
  const report: ScenarioReport = {
    name: plan.name,
    description: plan.description,
    memoryBytes: plan.memoryBytes,
    workload: plan.workloadText,
    maxBytesPerSecond: plan.maxBytesPerSecond,
    skipped: null,
    runs: [],
    unmeasured: [],
  };
  if (plan.name === 'fresh-8g') {
    // Source and destination each map the guest; only touched pages cost, but the destination
    // agent refuses a guest larger than its free memory. Keep 2 GiB for everyone else.
    const need = plan.memoryBytes + 2 * GiB;
    if (availableMemory() < need) {
      report.skipped = `${formatBytes(availableMemory())} available, ${formatBytes(need)} needed`;
      progress(`${plan.name}: skipped: ${report.skipped}`);
      return report;
    }
  }
  progress(`${plan.name}: ${plan.description}: creating the guest (${formatBytes(plan.memoryBytes)}, ${plan.workloadText}) on a...`);
  const name = await bench.createGuest(plan.memoryBytes, plan.workload);
  if (plan.workload.kind === 'kv') await new Promise((r) => setTimeout(r, 2000)); // a steady ops/s figure before the first move
  let at = 'a';
  // Moves the guest without measuring it, printed and kept in the report as they are.
  const reposition = async (to: string, why: string): Promise<void> => {
    bench.check();
    progress(`${plan.name}: ${why}, plain, ${at}→${to} (not measured)...`);
    const run = await bench.migrate(name, at, to, 'plain', plan.memoryBytes, plan.maxBytesPerSecond);
    report.unmeasured.push({ direction: run.direction, totalMs: run.totalMs, ok: run.ok });
    if (!run.ok) throw new FerryError('ERR_FERRY_ABORTED', `${plan.name}: moving the guest ${run.direction} failed: ${run.error}`);
    at = to;
    if (plan.workload.kind === 'kv') await new Promise((r) => setTimeout(r, 1000));
  };
  try {
    // Encrypted and plain alternate on the same guest, and each mode moves it a→b and back b→a, so
    // each meets both hosts' memory. On a virtual host that matters: what a destination's first
    // touch of guest memory costs depends on where that memory was before — the memory the guest's
    // first process wrote keeps being handed on to the guests started on that host after it, and
    // was 7-20x cheaper to fault in than the other host's (docs/performance.md, "First touch").
    // The warm-up moves the guest there and back once before anything is measured.
    await reposition('b', 'warm-up');
    await reposition('a', 'warm-up');
    for (let i = 0; i < runs; i++) {
      // ABBA: every other round the modes go in the other order, so neither is always the first
      // to meet memory that the moves before it have not warmed.
      const variants = plan.verifyVariants ?? [false];
      const order = plan.modes.flatMap((m) => variants.map((v) => [m, v] as const));
      for (const [mode, verify] of i % 2 === 0 ? order : [...order].reverse()) {
        for (const [from, to] of [
          ['a', 'b'],
          ['b', 'a'],
        ] as const) {
          bench.check();
          progress(`${plan.name}: run ${i + 1}/${runs}, ${mode}${verify ? ' --verify' : ''}, ${from}→${to}...`);
          const run = await bench.migrate(name, from, to, mode, plan.memoryBytes, plan.maxBytesPerSecond, verify);
          report.runs.push(run);
          progress(`${plan.name}:   ${describeRun(run)}`);
          if (!run.ok) {
            for (const w of bench.local.warnings()) progress(`${plan.name}:   agent ${w}`);
            throw new FerryError('ERR_FERRY_ABORTED', `${plan.name}: the ${mode} migration ${from}→${to} failed: ${run.error}`);
          }
          at = to;
          if (plan.workload.kind === 'kv') await new Promise((r) => setTimeout(r, 1000));
        }
      }
    }
  } finally {
    await bench.destroyGuest(name, at);
  }
  if (plan.name === 'qemu-loopback') await runQemu(bench, report, runs, progress);
  return report;
}

async function runQemu(bench: Bench, report: ScenarioReport, runs: number, progress: (line: string) => void): Promise<void> {
  report.qemu = [];
  report.qemuSkipped = qemuMissing();
  if (report.qemuSkipped) {
    progress(`qemu: skipped: ${report.qemuSkipped}`);
    return;
  }
  const ramFile = path.join(bench.root, 'qemu-ram.bin');
  progress(`qemu: ${formatBytes(report.memoryBytes)} of random bytes for the guest RAM, TLS credentials...`);
  writeRandomFile(ramFile, report.memoryBytes);
  const tlsDir = await makeQemuTlsDir(bench.root);
  const modes: QemuMode[] = ['plain', 'multifd-tls', 'tls'];
  const migrate = (mode: QemuMode) =>
    runQemuMigration({ dir: bench.root, ramFile, memoryBytes: report.memoryBytes, mode, tlsDir, track: (q) => bench.track(q) });
  // QEMU's first migration meets memory as cold as ferry's first move does (plain: 5.6 s cold,
  // 0.83 s warm in one run): a warm-up first, and ABBA order as for ferry.
  bench.check();
  progress('qemu: warm-up, plain (not measured)...');
  const warm = await migrate('plain');
  report.qemuUnmeasured = [{ mode: 'plain', totalMs: warm.totalMs }];
  for (let i = 0; i < runs; i++) {
    for (const mode of i % 2 === 0 ? modes : [...modes].reverse()) {
      bench.check();
      progress(`qemu: run ${i + 1}/${runs}, ${mode}...`);
      const r = await migrate(mode);
      report.qemu.push(r);
      progress(
        `qemu:   ${mode}: total ${formatDuration(r.totalMs)}, downtime ${formatDuration(r.downtimeMs)}, ${formatBytes(r.transferredBytes)}, ${Math.round(r.mbps)} Mbit/s`,
      );
    }
  }
  rmSync(ramFile, { force: true });
}

function describeRun(r: FerryRun): string {
  if (!r.ok) return `${r.mode} ${r.direction}: FAILED: ${r.error}`;
  return (
    `${r.mode.padEnd(9)}${r.verify ? ' --verify' : ''} ${r.direction}: total ${formatDuration(r.totalMs)}, switch-over ${r.switchoverMs === null ? '—' : formatDuration(r.switchoverMs)}, ` +
    `${formatBytes(r.bytesSent)} sent (${(r.wireFraction * 100).toFixed(3)}% of memory), ${r.passes} passes` +
    (r.maxThrottlePercent ? `, throttled to ${100 - r.maxThrottlePercent}%` : '') +
    (r.opsPerSecondBefore ? `, ${Math.round(r.opsPerSecondBefore)} ops/s before` : '') +
    `, CPU source ${cpuText(r.sourceCpuSeconds, r.sourceSystemCpuSeconds)} / destination ${cpuText(r.destinationCpuSeconds, r.destinationSystemCpuSeconds)}`
  );
}

const cpuText = (s: number | null, system: number | null): string =>
  s === null ? '—' : `${s.toFixed(2)} s${system === null ? '' : ` (kernel ${system.toFixed(2)})`}`;

export interface Ratios {
  /**
   * Each direction's ratio of medians (encrypted over plain), and over both the geometric mean of
   * the two: the directions meet different memory, so their times are not pooled.
   */
  idleEncryptedOverPlainTime: number | null;
  idleEncryptedOverPlainTimeByDirection: { 'a→b': number | null; 'b→a': number | null };
  /** The destination guest process's CPU seconds, encrypted over plain (medians). */
  idleEncryptedOverPlainDestinationCpu: number | null;
  idleMaxSwitchoverMs: number | null;
  kvMaxSwitchoverMs: number | null;
  kvAllWithinMaxDowntime: boolean | null;
  kvOpsPerSecondAchievedFraction: number | null;
  freeWireFraction: number | null;
  ferryOverQemuMultifdTlsTime: number | null;
  ferryOverQemuPlainTime: number | null;
  ferryOverQemuTlsTime: number | null;
  /** kv-verify: median switch-over and total time with --verify over without (null when not run). */
  kvVerifyOverUnverifiedSwitchover?: number | null;
  kvVerifyOverUnverifiedTime?: number | null;
}

export function computeRatios(scenarios: ScenarioReport[]): Ratios {
  const by = (n: ScenarioName) => scenarios.find((s) => s.name === n && !s.skipped);
  const idle = by('idle-10g');
  const kv = by('kv');
  const fresh = by('fresh-8g');
  const q = by('qemu-loopback');
  const switchovers = (s: ScenarioReport | undefined) =>
    s?.runs.filter((r) => r.ok && r.switchoverMs !== null).map((r) => r.switchoverMs!) ?? [];
  const qemuTime = (mode: QemuMode) => median(q?.qemu?.filter((r) => r.mode === mode).map((r) => r.totalMs) ?? []);
  const kvWanted = kv?.kvRate ? kv.kvRate.gets + kv.kvRate.sets : null;
  const kvOps = median(kv?.runs.map((r) => r.opsPerSecondBefore ?? NaN) ?? []);
  const ferryLoopback = medianTotal(q, 'encrypted');
  const idleAb = ratio(medianTotal(idle, 'encrypted', 'a→b'), medianTotal(idle, 'plain', 'a→b'));
  const idleBa = ratio(medianTotal(idle, 'encrypted', 'b→a'), medianTotal(idle, 'plain', 'b→a'));
  const kvVerify = by('kv-verify');
  const verifyRuns = (verify: boolean) => kvVerify?.runs.filter((r) => r.ok && (r.verify ?? false) === verify) ?? [];
  const verifyMedian = (verify: boolean, field: 'switchoverMs' | 'totalMs') => median(verifyRuns(verify).map((r) => r[field] ?? NaN));
  return {
    ...(kvVerify
      ? {
          kvVerifyOverUnverifiedSwitchover: ratio(verifyMedian(true, 'switchoverMs'), verifyMedian(false, 'switchoverMs')),
          kvVerifyOverUnverifiedTime: ratio(verifyMedian(true, 'totalMs'), verifyMedian(false, 'totalMs')),
        }
      : {}),
    idleEncryptedOverPlainTime: idleAb === null || idleBa === null ? null : Math.sqrt(idleAb * idleBa),
    idleEncryptedOverPlainTimeByDirection: { 'a→b': idleAb, 'b→a': idleBa },
    idleEncryptedOverPlainDestinationCpu: ratio(medianDestinationCpu(idle, 'encrypted'), medianDestinationCpu(idle, 'plain')),
    idleMaxSwitchoverMs: switchovers(idle).length ? Math.max(...switchovers(idle)) : null,
    kvMaxSwitchoverMs: switchovers(kv).length ? Math.max(...switchovers(kv)) : null,
    kvAllWithinMaxDowntime: kv ? kv.runs.every((r) => r.ok && r.switchoverMs !== null && r.switchoverMs <= MAX_DOWNTIME_MS) : null,
    kvOpsPerSecondAchievedFraction: ratio(kvOps, kvWanted),
    freeWireFraction: fresh ? Math.max(...fresh.runs.map((r) => r.wireFraction)) : null,
    ferryOverQemuMultifdTlsTime: ratio(ferryLoopback, qemuTime('multifd-tls')),
    ferryOverQemuPlainTime: ratio(ferryLoopback, qemuTime('plain')),
    ferryOverQemuTlsTime: ratio(ferryLoopback, qemuTime('tls')),
  };
}

function printTable(output: Output, scenarios: ScenarioReport[], ratios: Ratios, machine: Record<string, unknown>): void {
  const fmt = (x: number | null, digits = 2) => (x === null ? '—' : x.toFixed(digits));
  for (const s of scenarios) {
    output.print(`${s.name}: ${s.description}`);
    if (s.skipped) output.print(`  skipped: ${s.skipped}`);
    for (const r of s.runs) output.print(`  ${describeRun(r)}`);
    if (s.qemuSkipped) output.print(`  qemu skipped: ${s.qemuSkipped}`);
    for (const r of s.qemu ?? [])
      output.print(
        `  qemu ${r.mode.padEnd(11)}: total ${formatDuration(r.totalMs)}, downtime ${formatDuration(r.downtimeMs)}, ${formatBytes(r.transferredBytes)}`,
      );
  }
  output.print('');
  output.print('goal                                             measured');
  const byDirection = ratios.idleEncryptedOverPlainTimeByDirection;
  output.print(
    `idle 10 Gb/s: encrypted/plain time ≤ 1.05          ${fmt(ratios.idleEncryptedOverPlainTime)} (a→b ${fmt(byDirection['a→b'])}, b→a ${fmt(byDirection['b→a'])})`,
  );
  output.print(`idle 10 Gb/s: destination CPU encrypted/plain        ${fmt(ratios.idleEncryptedOverPlainDestinationCpu)}`);
  output.print(`idle 10 Gb/s: switch-over < 100 ms                 ${fmt(ratios.idleMaxSwitchoverMs, 1)} ms (worst run)`);
  output.print(
    `kv: switch-over ≤ ${MAX_DOWNTIME_MS} ms in every run            ${ratios.kvAllWithinMaxDowntime === null ? '—' : ratios.kvAllWithinMaxDowntime ? 'yes' : 'NO'} (worst ${fmt(ratios.kvMaxSwitchoverMs, 1)} ms; ops/s reached ${fmt(ratios.kvOpsPerSecondAchievedFraction)} of the rate asked)`,
  );
  output.print(
    `fresh guest: bytes on the wire < 1% of memory     ${ratios.freeWireFraction === null ? '—' : `${(ratios.freeWireFraction * 100).toFixed(4)}%`}`,
  );
  output.print(`ferry encrypted / QEMU multifd+TLS time ≤ 0.33    ${fmt(ratios.ferryOverQemuMultifdTlsTime)}`);
  output.print(`ferry encrypted / QEMU plain time ≤ 1.5           ${fmt(ratios.ferryOverQemuPlainTime)}`);
  output.print(`ferry encrypted / QEMU TLS time                   ${fmt(ratios.ferryOverQemuTlsTime)}`);
  if (ratios.kvVerifyOverUnverifiedSwitchover !== undefined) {
    output.print(`kv --verify / unverified switch-over ≤ 1.1        ${fmt(ratios.kvVerifyOverUnverifiedSwitchover ?? null)}`);
    output.print(`kv --verify / unverified time ≤ 1.05              ${fmt(ratios.kvVerifyOverUnverifiedTime ?? null)}`);
  }
  output.print(`machine: ${JSON.stringify(machine)}`);
}

export const benchMigrateCommand = defineCommand<MigrateArgs>({
  command: 'migrate',
  describe: "live migrations through two real local agents in four scenarios, beside QEMU's own (ratios from one run)",
  builder: (yargs: Argv<GlobalArgs>) =>
    yargs
      .option('scenario', {
        type: 'string',
        array: true,
        choices: [...SCENARIOS, ...EXTRA_SCENARIOS] as string[],
        describe: `run only these (default: ${SCENARIOS.join(', ')}; ${EXTRA_SCENARIOS.join(', ')} only when named)`,
      })
      .option('runs', {
        type: 'number',
        default: 2,
        describe: 'rounds of each scenario (each: both modes a→b and b→a; every other round plain first)',
      })
      .option('kv-scale', { type: 'number', default: 1, describe: `the kv rate as a fraction of ${KV_GETS} GET + ${KV_SETS} SET a second` })
      // For tests: every guest's memory times this (at least 16 MiB), so the code path runs small.
      .option('memory-scale', { type: 'number', default: 1, hidden: true })
      .example('$0 bench migrate', 'all four scenarios: encrypted then plain, plain then encrypted, each move a→b and back')
      .example('$0 bench migrate --scenario qemu-loopback --json', 'ferry beside QEMU, as one JSON object'),
  run: async (output, args) => {
    if (!Number.isInteger(args.runs) || args.runs < 1 || args.runs > 10) throw new FerryError('ERR_FERRY_USAGE', '--runs must be 1 to 10');
    const scale = args['memory-scale'];
    if (!(scale > 0 && scale <= 1)) throw new FerryError('ERR_FERRY_USAGE', '--memory-scale must be above 0 and at most 1');
    const kvScale = args['kv-scale'];
    if (!(kvScale > 0 && kvScale <= 1)) throw new FerryError('ERR_FERRY_USAGE', '--kv-scale must be above 0 and at most 1');
    const wanted = new Set<string>(args.scenario?.length ? args.scenario : SCENARIOS);
    // Progress goes to stderr also under --json: a run takes minutes.
    const progress = (line: string) => output.err.write(`${line}\n`);
    const loadBefore = os.loadavg();
    const bench = new Bench(progress);
    let interrupted: NodeJS.Signals | null = null;
    const onSignal = (signal: NodeJS.Signals) => {
      interrupted = signal;
      output.warn(`${signal}: stopping the bench's agents, guests and QEMU processes and removing its files`);
      void bench.close();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const scenarios: ScenarioReport[] = [];
    let backend: string;
    try {
      await bench.start();
      backend = (await bench.call('a', (c) => c.call('capabilities', {}))).cryptoBackend;
      for (const plan of plans(scale, kvScale).filter((p) => wanted.has(p.name))) {
        const s = await runScenario(bench, plan, args.runs, progress);
        if (plan.workload.kind === 'kv')
          s.kvRate = { gets: plan.workload.getsPerSecond, sets: plan.workload.setsPerSecond, scale: kvScale };
        scenarios.push(s);
      }
    } catch (err) {
      if (interrupted) throw new FerryError('ERR_FERRY_ABORTED', `interrupted by ${interrupted}; everything the bench made is removed`);
      throw err;
    } finally {
      await bench.close();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    if (interrupted) throw new FerryError('ERR_FERRY_ABORTED', `interrupted by ${interrupted}; everything the bench made is removed`);
    const ratios = computeRatios(scenarios);
    const machine = { loadBefore, loadAfter: os.loadavg(), cpus: os.cpus().length, backend, memoryScale: scale };
    output.emit({ type: 'result', ok: true, subject: 'migrate', scenarios, ratios, machine });
    printTable(output, scenarios, ratios, machine);
  },
});
