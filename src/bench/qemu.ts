/**
 * `ferry bench qemu`: one QEMU guest (ferry's test guest, its memory filled with a pattern that
 * looks random, its window rewritten as fast as it can) moved on this host by QEMU alone over
 * loopback TCP (plain, multifd, TLS, multifd + TLS) and through ferry's channel (encrypted and
 * plain, 1 and 2 streams), each with the guest paused and running, in the same run, in ABBA order,
 * for each QEMU binary asked for; and a guest that never wrote its memory, for what crosses then.
 * With --disk, the guest has a disk too, moved by QEMU alone the way QEMU and libvirt do it (NBD +
 * blockdev-mirror under QEMU's TLS, multifd + TLS for RAM) and by ferry encrypted, the guest
 * running and writing it; and a guest with a fresh qcow2 of that size, for what its disk puts on
 * the wire. Figures from one run, compared as ratios; the machine and the load average are in the result.
 */
import { existsSync, mkdtempSync, rmSync, statfsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Argv } from 'yargs';
import { FerryError } from '../errors.js';
import { writeFileAtomic } from '../common/atomic-file.js';
import { formatBytes, formatDuration, parseDuration, parseSize } from '../common/units.js';
import { probeQemu, resolveQemu } from '../guest/qemu/probe.js';
import { DEFAULT_MACHINE } from '../guest/qemu/config.js';
import { testGuestAppend } from '../guest/qemu/test-guest.js';
import { defineCommand, type GlobalArgs } from '../cli/command.js';
import type { Output } from '../cli/output.js';
import type { GuestCreateRequest, QemuDiskRequest } from '../guest/types.js';
import { availableMemory, describeMachine, versionLine } from './machine.js';
import { BenchGuest, SETTLE_MS, type GuestState, type MoveFigures } from './qemu-guest.js';
import { makeQemuTlsDir, writeRandomFile, type QemuMode } from './qemu-migration.js';
import { median, ratio } from './stats.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** Debian backports' QEMU 10.0 where this kind of machine has it (a wrapper script). */
export const QEMU_10_BINARY = '/opt/qemu-10.0/qemu-system-x86_64';
/** ferry's 2-stream moves: as many multifd channels for QEMU alone. */
const CHANNELS = 2;
const WINDOW_MIB = 8;
const QUICK_MEMORY = 64 * MiB;
const QUICK_SETTLE_MS = 200;
/** The test guest covers RAM below 3.5 GiB on -machine pc. */
const MAX_MEMORY = 3 * GiB;

export const GOALS = {
  /** ferry encrypted (2 streams) / QEMU multifd + TLS (2 channels), by median total time. */
  ferryEncryptedOverQemuMultifdTls: 0.6,
  /** ferry encrypted (2 streams) / QEMU plain multifd (2 channels). */
  ferryEncryptedOverQemuMultifd: 1.5,
  /** A guest that never wrote its memory: ferry's wire bytes / memory. */
  neverWrittenWireFraction: 0.01,
  /** --disk: a fresh qcow2's bytes on ferry's wire (wire less RAM), less what the guest wrote, / its virtual size. */
  freshDiskWireFraction: 0.01,
} as const;

/** --disk: the guest rewrites (and re-reads) this much at the start of its disk, 64 KiB each 10 ms tick. */
const DISK_REGION_MIB = 64;
const FRESH_DISK_REGION_MIB = 16;
/** The test guest's steady disk writes: one 64 KiB chunk a 100 Hz tick. */
export const DISK_WRITE_BYTES_PER_S = 64 * 1024 * 100;
const MAX_DISK = 64 * GiB;

export type Variant =
  { carrier: 'qemu'; mode: QemuMode; streams: number } | { carrier: 'ferry'; mode: 'encrypted' | 'plain'; streams: number };

/** Each ferry variant beside the QEMU one it is compared with, so the two run under the same conditions. */
const PAIRS: [Variant, Variant][] = [
  [
    { carrier: 'qemu', mode: 'plain', streams: 1 },
    { carrier: 'ferry', mode: 'plain', streams: 1 },
  ],
  [
    { carrier: 'qemu', mode: 'multifd', streams: CHANNELS },
    { carrier: 'ferry', mode: 'plain', streams: CHANNELS },
  ],
  [
    { carrier: 'qemu', mode: 'tls', streams: 1 },
    { carrier: 'ferry', mode: 'encrypted', streams: 1 },
  ],
  [
    { carrier: 'qemu', mode: 'multifd-tls', streams: CHANNELS },
    { carrier: 'ferry', mode: 'encrypted', streams: CHANNELS },
  ],
];
const STATES: GuestState[] = ['paused', 'running'];
/** --disk: the encrypted pair only, the guest running (and writing its disk). */
const DISK_PAIRS: [Variant, Variant][] = [PAIRS[3]!];
const DISK_STATES: GuestState[] = ['running'];

export const variantLabel = (v: Variant): string =>
  `${v.carrier} ${v.mode}${v.carrier === 'ferry' || v.streams > 1 ? ` x${v.streams}` : ''}`;

export interface Row extends MoveFigures {
  label: string;
  carrier: Variant['carrier'];
  mode: string;
  streams: number;
  state: GuestState;
  /** 0: the warm-up (not counted); then 1, 2, ... */
  round: number;
}

export interface FreshDiskFigures {
  virtualBytes: number;
  /** What the guest wrote to the disk: its region before the move, and at most its steady rate during it. */
  writtenBytes: number;
  /** The wire's bytes less QEMU's RAM bytes: what the disk (and the channel's framing) put on it. */
  diskWireBytes: number | null;
}

export interface Ratio {
  value: number | null;
  goal: number | null;
  met: boolean | null;
}

export interface QemuReport {
  binary: string;
  version: string | null;
  accel: string | null;
  accelReason: string;
  skipped: string | null;
  /** The guest's -append: the test guest's parameters. */
  append: string;
  warmUp: Row[];
  rows: Row[];
  /** A guest of the same size that never wrote its memory (fill=0). */
  neverWritten: Row[];
  /** --disk: a guest (memory never written) with a fresh qcow2 of the disk's size, writing its first MiBs. */
  freshDisk: (Row & FreshDiskFigures)[];
  ratios: Record<string, Ratio>;
  checks: {
    allCompleted: boolean;
    worstDowntimeMs: number | null;
    allWithinDowntimeLimit: boolean;
    memoryIntact: boolean;
    neverWrittenWireFraction: number | null;
    freshDiskWireFraction: number | null;
  };
}

interface QemuArgs {
  memory?: string;
  runs?: number;
  quick: boolean;
  qemu?: string[];
  disk?: string;
  out?: string;
  'max-downtime': string;
}

function freeBytes(dir: string): number {
  const st = statfsSync(dir);
  return st.bavail * st.bsize;
}

/** The binaries asked for, each checked; by default the product's (FERRY_QEMU, else PATH) and QEMU 10.0 where it is installed. */
export function qemuBinaries(asked: string[] | undefined): { binaries: string[]; missing: string | null } {
  if (asked?.length) {
    const binaries = asked.map((b) => {
      const r = resolveQemu({ FERRY_QEMU: b, PATH: process.env.PATH ?? '' });
      if (!r.executable) throw new FerryError('ERR_FERRY_USAGE', `--qemu ${b}: not an executable file (on PATH or as a path)`);
      return r.executable;
    });
    return { binaries: [...new Set(binaries)], missing: null };
  }
  const r = resolveQemu();
  const binaries = r.executable ? [r.executable] : [];
  if (existsSync(QEMU_10_BINARY) && !binaries.includes(QEMU_10_BINARY)) binaries.push(QEMU_10_BINARY);
  return { binaries, missing: binaries.length ? null : r.missing };
}

/** The rounds' order: pairs side by side, the guest paused then running; every second round reversed (ABBA). */
export function schedule(runs: number, disk = false): { variant: Variant; state: GuestState; round: number }[] {
  const [pairs, states] = disk ? [DISK_PAIRS, DISK_STATES] : [PAIRS, STATES];
  const once = states.flatMap((state) => pairs.flatMap((pair) => pair.map((variant) => ({ variant, state }))));
  const out: { variant: Variant; state: GuestState; round: number }[] = [];
  for (let round = 1; round <= runs; round++) for (const s of round % 2 ? once : [...once].reverse()) out.push({ ...s, round });
  return out;
}

interface Settings {
  memoryBytes: number;
  runs: number;
  maxDowntimeMs: number;
  /** The guest's time in its state (paused, running) before each move. */
  settleMs: number;
  /** --disk: the disk's size; 0 without. */
  diskBytes: number;
}

class Run {
  readonly root = mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-qemu-'));
  private readonly guests = new Set<BenchGuest>();
  private closing = false;
  private image: string | null = null;

  /** --disk: one raw image of random bytes, the first guest's disk under every QEMU (made once). */
  diskImage(bytes: number, progress: (line: string) => void): string {
    if (this.image) return this.image;
    const file = path.join(this.root, 'disk.raw');
    progress(`  writing ${formatBytes(bytes)} of random bytes to ${file}...`);
    const t0 = performance.now();
    writeRandomFile(file, bytes);
    progress(`  written in ${formatDuration(performance.now() - t0)}`);
    this.image = file;
    return file;
  }

  track(g: BenchGuest): BenchGuest {
    this.guests.add(g);
    if (this.closing) g.close();
    return g;
  }

  async release(g: BenchGuest): Promise<void> {
    this.guests.delete(g);
    await g.destroy();
  }

  check(): void {
    if (this.closing) throw new FerryError('ERR_FERRY_ABORTED', 'the bench is stopping');
  }

  close(): void {
    this.closing = true;
    for (const g of this.guests) g.close();
    this.guests.clear();
    rmSync(this.root, { recursive: true, force: true });
  }
}

async function move(guest: BenchGuest, v: Variant, state: GuestState, round: number, s: Settings, tlsDir: string): Promise<Row> {
  const figures =
    v.carrier === 'ferry'
      ? await guest.moveByFerry({ mode: v.mode, streams: v.streams, state, maxDowntimeMs: s.maxDowntimeMs })
      : await guest.moveByQemu({ mode: v.mode, channels: v.streams, state, maxDowntimeMs: s.maxDowntimeMs, tlsDir });
  return { label: variantLabel(v), carrier: v.carrier, mode: v.mode, streams: v.streams, state, round, ...figures };
}

async function benchBinary(
  run: Run,
  index: number,
  binary: string,
  s: Settings,
  tlsDir: string,
  progress: (line: string) => void,
): Promise<QemuReport> {
  const disk = s.diskBytes > 0;
  const append = testGuestAppend({
    fillMiB: Math.floor(s.memoryBytes / MiB),
    windowMiB: WINDOW_MIB,
    rateKiBps: 'max',
    ...(disk ? { diskMiB: DISK_REGION_MIB } : {}),
  });
  const version = versionLine(binary);
  const report: QemuReport = {
    binary,
    version,
    accel: null,
    accelReason: '',
    skipped: null,
    append,
    warmUp: [],
    rows: [],
    neverWritten: [],
    freshDisk: [],
    ratios: {},
    checks: {
      allCompleted: false,
      worstDowntimeMs: null,
      allWithinDowntimeLimit: false,
      memoryIntact: false,
      neverWrittenWireFraction: null,
      freshDiskWireFraction: null,
    },
  };
  progress(`${binary}: ${version ?? 'version unknown'}; probing its accelerators...`);
  const probe = await probeQemu({ env: process.env, machineTypes: [DEFAULT_MACHINE] });
  if (probe.missing || !probe.chosen) {
    report.skipped = probe.missing ?? `QEMU ${probe.version} runs no guest here: ${probe.accelerators.tcg.reason}`;
    progress(`${binary}: skipped: ${report.skipped}`);
    return report;
  }
  if (!probe.machineTypes[DEFAULT_MACHINE]) {
    report.skipped = `QEMU ${probe.version} has no machine type ${DEFAULT_MACHINE}`;
    progress(`${binary}: skipped: ${report.skipped}`);
    return report;
  }
  report.accel = probe.chosen;
  report.accelReason = probe.chosen === 'kvm' ? probe.accelerators.kvm.reason : `KVM: ${probe.accelerators.kvm.reason}`;
  progress(`${binary}: ${probe.chosen.toUpperCase()} (${report.accelReason})`);
  const request = (name: string, text: string, disks: QemuDiskRequest[] = []) => ({
    name,
    driver: 'qemu' as const,
    memoryBytes: s.memoryBytes,
    cpus: 1,
    accel: probe.chosen!,
    append: text,
    nic: 'virtio' as const,
    encryptedMigration: 'opportunistic' as const,
    disks,
  });

  const disks = disk ? [{ file: run.diskImage(s.diskBytes, progress), shared: false }] : [];
  progress(
    `${binary}: creating the guest (${formatBytes(s.memoryBytes)}${disk ? `, a ${formatBytes(s.diskBytes)} disk` : ''}, ${append}) and filling its memory...`,
  );
  const guest = run.track(
    await BenchGuest.create(path.join(run.root, `qemu${index}-guest`), request('bench', append, disks), progress, s.settleMs),
  );
  const record = (list: Row[], row: Row) => {
    list.push(row);
    progress(`${binary}:   ${describeRow(row)}`);
  };
  try {
    // Each carrier's first move meets memory and code paths colder than every later one: not counted.
    for (const v of disk ? DISK_PAIRS[0]! : [PAIRS[0]![0], PAIRS[1]![1]]) {
      run.check();
      progress(`${binary}: warm-up, ${variantLabel(v)}, running (not counted)...`);
      record(report.warmUp, await move(guest, v, 'running', 0, s, tlsDir));
    }
    const plan = schedule(s.runs, disk);
    for (const [i, step] of plan.entries()) {
      run.check();
      progress(`${binary}: ${i + 1}/${plan.length}: round ${step.round}, ${variantLabel(step.variant)}, ${step.state}...`);
      record(report.rows, await move(guest, step.variant, step.state, step.round, s, tlsDir));
    }
  } finally {
    await run.release(guest);
  }

  const c: BinaryRun = { run, index, binary, s, tlsDir, report, request, progress };
  if (disk) await freshDisk(c);
  else await neverWritten(c);
  computeReport(report, s);
  return report;
}

type Request = (name: string, text: string, disks?: QemuDiskRequest[]) => GuestCreateRequest;

/** One QEMU binary's part of the run, as its second guest's moves need it. */
interface BinaryRun {
  run: Run;
  index: number;
  binary: string;
  s: Settings;
  tlsDir: string;
  report: QemuReport;
  request: Request;
  progress: (line: string) => void;
}

async function neverWritten(c: BinaryRun): Promise<void> {
  const { run, index, binary, s, tlsDir, report, request, progress } = c;
  progress(`${binary}: a guest of ${formatBytes(s.memoryBytes)} that never wrote its memory (fill=0)...`);
  const fresh = run.track(
    await BenchGuest.create(
      path.join(run.root, `qemu${index}-never-written`),
      request('fresh', testGuestAppend({ fillMiB: 0 })),
      progress,
      s.settleMs,
    ),
  );
  try {
    for (const v of [PAIRS[3]![1], PAIRS[0]![0]]) {
      run.check();
      const row = await move(fresh, v, 'running', 1, s, tlsDir);
      report.neverWritten.push(row);
      progress(`${binary}:   ${describeRow(row)}`);
    }
  } finally {
    await run.release(fresh);
  }
}

/** --disk: a guest whose memory was never written, with a fresh qcow2 of the disk's size, writing its first MiBs. */
async function freshDisk(c: BinaryRun): Promise<void> {
  const { run, index, binary, s, tlsDir, report, request, progress } = c;
  const text = testGuestAppend({ fillMiB: 0, diskMiB: FRESH_DISK_REGION_MIB });
  progress(`${binary}: a guest with a fresh ${formatBytes(s.diskBytes)} qcow2 (${text})...`);
  const fresh = run.track(
    await BenchGuest.create(
      path.join(run.root, `qemu${index}-fresh-disk`),
      request('fresh', text, [{ bytes: s.diskBytes, shared: false }]),
      progress,
      s.settleMs,
    ),
  );
  try {
    for (const v of DISK_PAIRS[0]!.slice().reverse()) {
      run.check();
      const row = await move(fresh, v, 'running', 1, s, tlsDir);
      const figures: FreshDiskFigures = {
        virtualBytes: s.diskBytes,
        // Rewrites during the move cross too (the mirror copies each write as it happens).
        writtenBytes: FRESH_DISK_REGION_MIB * MiB + Math.ceil(((row.totalMs ?? 0) / 1000) * DISK_WRITE_BYTES_PER_S),
        diskWireBytes: row.wireBytes !== null && row.qemuRamBytes !== null ? row.wireBytes - row.qemuRamBytes : null,
      };
      report.freshDisk.push({ ...row, ...figures });
      progress(
        `${binary}:   ${describeRow(row)}; disk on the wire ${figures.diskWireBytes === null ? '—' : formatBytes(figures.diskWireBytes)}, written ≤ ${formatBytes(figures.writtenBytes)}`,
      );
    }
  } finally {
    await run.release(fresh);
  }
}

/** The ratios and checks of one binary's rows. */
export function computeReport(r: QemuReport, s: Settings): void {
  const total = (label: string, state: GuestState) =>
    median(r.rows.filter((x) => x.ok && x.label === label && x.state === state).map((x) => x.totalMs ?? NaN));
  const cpu = (label: string, state: GuestState) =>
    median(
      r.rows
        .filter((x) => x.ok && x.label === label && x.state === state)
        .map((x) => (x.cpuSeconds.source ?? NaN) + (x.cpuSeconds.destination ?? NaN)),
    );
  const goal = (value: number | null, g: number | null): Ratio => ({
    value: value === null ? null : Math.round(value * 1000) / 1000,
    goal: g,
    met: value === null || g === null ? null : value <= g,
  });
  const [plain, multifd, tls, multifdTls] = PAIRS.map((p) => variantLabel(p[0]));
  const [ferryPlain1, ferryPlain2, ferryEnc1, ferryEnc2] = PAIRS.map((p) => variantLabel(p[1]));
  const states = s.diskBytes ? DISK_STATES : STATES;
  // --disk measures the encrypted pair only: the other ratios would compare nothing.
  const some = (name: string, value: Ratio) => {
    if (value.value !== null || !s.diskBytes) r.ratios[name] = value;
  };
  const what = s.diskBytes ? ' (memory and disk)' : '';
  for (const state of states) {
    r.ratios[`${state}${what}: ${ferryEnc2} / ${multifdTls}`] = goal(
      ratio(total(ferryEnc2!, state), total(multifdTls!, state)),
      GOALS.ferryEncryptedOverQemuMultifdTls,
    );
    some(
      `${state}: ${ferryEnc2} / ${multifd}`,
      goal(ratio(total(ferryEnc2!, state), total(multifd!, state)), GOALS.ferryEncryptedOverQemuMultifd),
    );
    some(`${state}: ${ferryEnc1} / ${tls}`, goal(ratio(total(ferryEnc1!, state), total(tls!, state)), null));
    some(`${state}: ${ferryPlain1} / ${plain}`, goal(ratio(total(ferryPlain1!, state), total(plain!, state)), null));
    some(`${state}: ${ferryPlain2} / ${multifd}`, goal(ratio(total(ferryPlain2!, state), total(multifd!, state)), null));
    some(`${state}: ${ferryEnc2} / ${ferryPlain2}`, goal(ratio(total(ferryEnc2!, state), total(ferryPlain2!, state)), null));
    r.ratios[`${state}: CPU, both sides, ${ferryEnc2} / ${multifdTls}`] = goal(
      ratio(cpu(ferryEnc2!, state), cpu(multifdTls!, state)),
      null,
    );
  }
  const all = [...r.warmUp, ...r.rows, ...r.neverWritten, ...r.freshDisk];
  const downtimes = all.filter((x) => x.ok && x.downtimeMs !== null).map((x) => x.downtimeMs!);
  const fresh = r.neverWritten
    .filter((x) => x.carrier === 'ferry' && x.ok && x.wireBytes !== null)
    .map((x) => x.wireBytes! / s.memoryBytes);
  const freshDisk = r.freshDisk
    .filter((x) => x.carrier === 'ferry' && x.ok && x.diskWireBytes !== null)
    .map((x) => (x.diskWireBytes! - x.writtenBytes) / x.virtualBytes);
  r.checks = {
    allCompleted: all.length > 0 && all.every((x) => x.ok),
    worstDowntimeMs: downtimes.length ? Math.max(...downtimes) : null,
    allWithinDowntimeLimit: all.length > 0 && all.every((x) => x.ok && x.downtimeMs !== null && x.downtimeMs <= s.maxDowntimeMs),
    memoryIntact: all.every((x) => x.damage.length === 0),
    neverWrittenWireFraction: fresh.length ? Math.max(...fresh) : null,
    freshDiskWireFraction: freshDisk.length ? Math.max(...freshDisk) : null,
  };
  const below = (name: string, f: number | null, g: number) => {
    r.ratios[name] = goal(f, g);
    if (f !== null) r.ratios[name]!.met = f < g;
  };
  if (!s.diskBytes)
    below('never-written guest: ferry wire bytes / memory', r.checks.neverWrittenWireFraction, GOALS.neverWrittenWireFraction);
  else below('fresh qcow2: (ferry disk wire bytes - written) / virtual size', r.checks.freshDiskWireFraction, GOALS.freshDiskWireFraction);
}

const fraction = (name: string) => name.startsWith('never') || name.startsWith('fresh');
const seconds = (x: number | null) => (x === null ? '—' : x.toFixed(2));

function describeRow(r: Row): string {
  const head = `${r.label.padEnd(22)} ${r.state.padEnd(7)}`;
  if (!r.ok) return `${head} FAILED: ${r.error}`;
  return (
    `${head} total ${formatDuration(r.totalMs ?? 0)}, downtime ${r.downtimeMs === null ? '—' : formatDuration(r.downtimeMs)}, ` +
    `wire ${r.wireBytes === null ? '—' : formatBytes(r.wireBytes)}, CPU s source ${seconds(r.cpuSeconds.source)} (vCPU ${seconds(r.vcpuSeconds.source)}) / ` +
    `destination ${seconds(r.cpuSeconds.destination)}${r.damage.length ? `, MEMORY DAMAGED: ${r.damage[0]}` : ''}${r.notes.length ? ` (${r.notes.join('; ')})` : ''}`
  );
}

function printReport(output: Output, reports: QemuReport[], s: Settings): void {
  for (const r of reports) {
    output.print(`${r.binary}: ${r.version ?? 'version unknown'}${r.accel ? `, ${r.accel.toUpperCase()}` : ''}`);
    if (r.skipped) {
      output.print(`  skipped: ${r.skipped}`);
      continue;
    }
    output.print(`  ${'median of the rounds'.padEnd(30)} total      downtime   wire        CPU s source / destination`);
    for (const state of s.diskBytes ? DISK_STATES : STATES) {
      for (const label of (s.diskBytes ? DISK_PAIRS : PAIRS).flat().map(variantLabel)) {
        const rows = r.rows.filter((x) => x.ok && x.label === label && x.state === state);
        const m = (f: (x: Row) => number | null) => median(rows.map((x) => f(x) ?? NaN));
        const t = m((x) => x.totalMs);
        const d = m((x) => x.downtimeMs);
        const w = m((x) => x.wireBytes);
        output.print(
          `  ${`${label}, ${state}`.padEnd(30)} ${(t === null ? '—' : formatDuration(t)).padEnd(10)} ${(d === null ? '—' : formatDuration(d)).padEnd(10)} ` +
            `${(w === null ? '—' : formatBytes(w)).padEnd(11)} ${seconds(m((x) => x.cpuSeconds.source))} / ${seconds(m((x) => x.cpuSeconds.destination))}`,
        );
      }
    }
    for (const x of r.neverWritten) output.print(`  never written: ${describeRow(x)}`);
    for (const x of r.freshDisk)
      output.print(
        `  fresh qcow2: ${describeRow(x)}; disk on the wire ${x.diskWireBytes === null ? '—' : formatBytes(x.diskWireBytes)} for ${formatBytes(x.virtualBytes)}, written ≤ ${formatBytes(x.writtenBytes)}`,
      );
    for (const [name, v] of Object.entries(r.ratios)) {
      const verdict =
        v.goal === null ? '' : ` (goal ${fraction(name) ? '<' : '≤'} ${v.goal}: ${v.met === null ? 'n/a' : v.met ? 'met' : 'NOT met'})`;
      output.print(`  ${name.padEnd(60)} ${v.value === null ? '—' : v.value.toFixed(fraction(name) ? 5 : 2)}${verdict}`);
    }
    const c = r.checks;
    output.print(
      `  every move completed: ${c.allCompleted ? 'yes' : 'NO'}; downtime ≤ ${s.maxDowntimeMs} ms in every move: ${c.allWithinDowntimeLimit ? 'yes' : 'NO'} ` +
        `(worst ${c.worstDowntimeMs === null ? '—' : formatDuration(c.worstDowntimeMs)}); the guest's memory intact: ${c.memoryIntact ? 'yes' : 'NO'}`,
    );
  }
}

export const benchQemuCommand = defineCommand<QemuArgs>({
  command: 'qemu',
  describe:
    'one QEMU guest moved by QEMU alone (plain, multifd, TLS, multifd + TLS) and through ferry (encrypted, plain; 1 and 2 streams), paused and running',
  builder: (yargs: Argv<GlobalArgs>) =>
    yargs
      .option('memory', {
        type: 'string',
        describe: "the guest's memory, all of it filled by the test guest (default 2GiB; --quick: 64MiB)",
      })
      .option('runs', {
        type: 'number',
        describe: 'rounds of every variant, every second one in the reverse order (default 2; --quick: 1)',
      })
      .option('quick', { type: 'boolean', default: false, describe: 'a smoke test: 64 MiB, one round' })
      .option('qemu', {
        type: 'string',
        array: true,
        describe: `a QEMU binary to measure (repeatable; default: the one ferry uses, plus ${QEMU_10_BINARY} where present)`,
      })
      .option('disk', {
        type: 'string',
        describe: `give the guest a disk of this size too (its image random bytes, the guest rewriting its first ${DISK_REGION_MIB} MiB at ${DISK_WRITE_BYTES_PER_S / 1e6} MB/s), moved running by QEMU's NBD + mirror under its TLS and by ferry encrypted; and a fresh qcow2 of the size`,
      })
      .option('max-downtime', {
        type: 'string',
        default: '500ms',
        describe: "the downtime limit of every move (QEMU's downtime-limit, ferry's --max-downtime)",
      })
      .option('out', {
        type: 'string',
        describe: 'also write the result, as --json prints it, to this file (e.g. bench/results/qemu-DATE.json)',
      })
      .example('$0 bench qemu', 'a 2 GiB guest, two rounds, each QEMU found')
      .example('$0 bench qemu --json --out bench/results/qemu-2026-12-02.json', 'the result as JSON, kept')
      .example('$0 bench qemu --quick --qemu /usr/bin/qemu-system-x86_64', 'a smoke test with one QEMU')
      .example('$0 bench qemu --disk 4GiB', 'a 2 GiB guest with a 4 GiB disk it writes, moved running by each carrier'),
  run: async (output, args) => {
    const memoryBytes = args.memory !== undefined ? parseSize(args.memory, '--memory') : args.quick ? QUICK_MEMORY : 2 * GiB;
    if (memoryBytes % MiB !== 0 || memoryBytes < 32 * MiB || memoryBytes > MAX_MEMORY)
      throw new FerryError('ERR_FERRY_USAGE', '--memory must be whole MiB from 32MiB to 3GiB');
    const runs = args.runs ?? (args.quick ? 1 : 2);
    if (!Number.isInteger(runs) || runs < 1 || runs > 10) throw new FerryError('ERR_FERRY_USAGE', '--runs must be 1 to 10');
    const maxDowntimeMs = parseDuration(args['max-downtime'], '--max-downtime');
    if (maxDowntimeMs < 1 || maxDowntimeMs > 60_000) throw new FerryError('ERR_FERRY_USAGE', '--max-downtime must be from 1 ms to 60 s');
    const diskBytes = args.disk === undefined ? 0 : parseSize(args.disk, '--disk');
    if (args.disk !== undefined && (diskBytes % MiB !== 0 || diskBytes < 2 * DISK_REGION_MIB * MiB || diskBytes > MAX_DISK))
      throw new FerryError('ERR_FERRY_USAGE', `--disk must be whole MiB from ${2 * DISK_REGION_MIB}MiB to ${MAX_DISK / GiB}GiB`);
    const { binaries, missing } = qemuBinaries(args.qemu);
    const settings: Settings = { memoryBytes, runs, maxDowntimeMs, settleMs: args.quick ? QUICK_SETTLE_MS : SETTLE_MS, diskBytes };
    const command = ['ferry', ...process.argv.slice(2)].join(' ');
    const startedAt = new Date().toISOString();
    const loadBefore = os.loadavg();
    const machine = describeMachine();
    const progress = (line: string) => output.err.write(`${line}\n`);
    const reports: QemuReport[] = [];
    let skipped: string | null = missing;
    if (!skipped && availableMemory() < 2 * memoryBytes + GiB) {
      skipped = `${formatBytes(availableMemory())} of memory available; a move of ${formatBytes(memoryBytes)} needs ${formatBytes(2 * memoryBytes + GiB)}`;
    }
    // The random image, the guest's disk and its destination's at once.
    const diskRoom = 3 * diskBytes + GiB;
    const tmpFree = diskBytes ? freeBytes(os.tmpdir()) : Infinity;
    if (!skipped && tmpFree < diskRoom)
      skipped = `${formatBytes(tmpFree)} free in ${os.tmpdir()}; a disk of ${formatBytes(diskBytes)} needs ${formatBytes(diskRoom)} there`;
    if (skipped) progress(`skipped: ${skipped}`);
    else {
      const run = new Run();
      let interrupted: NodeJS.Signals | null = null;
      const onSignal = (signal: NodeJS.Signals) => {
        interrupted = signal;
        output.warn(`${signal}: stopping the bench's guest processes and QEMUs and removing its files`);
        run.close();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      const productQemu = process.env.FERRY_QEMU;
      try {
        progress(`TLS credentials for QEMU (openssl), in ${run.root}`);
        const tlsDir = await makeQemuTlsDir(run.root);
        for (const [index, binary] of binaries.entries()) {
          // The guest processes and the QEMUs this process starts find QEMU the product's way.
          process.env.FERRY_QEMU = binary;
          reports.push(await benchBinary(run, index, binary, settings, tlsDir, progress));
        }
      } catch (err) {
        if (interrupted) throw new FerryError('ERR_FERRY_ABORTED', `interrupted by ${interrupted}; everything the bench made is removed`);
        throw err;
      } finally {
        if (productQemu === undefined) delete process.env.FERRY_QEMU;
        else process.env.FERRY_QEMU = productQemu;
        run.close();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      if (interrupted) throw new FerryError('ERR_FERRY_ABORTED', `interrupted by ${interrupted}; everything the bench made is removed`);
    }
    const result = {
      type: 'result',
      ok: true,
      subject: 'qemu',
      command,
      startedAt,
      finishedAt: new Date().toISOString(),
      skipped,
      settings: { ...settings, channels: CHANNELS, windowMiB: WINDOW_MIB, goals: GOALS },
      machine: {
        ...machine,
        qemu: reports.map((r) => ({ binary: r.binary, version: r.version, accel: r.accel })),
        loadBefore,
        loadAfter: os.loadavg(),
      },
      qemus: reports,
    };
    if (args.out) await writeFileAtomic(args.out, `${JSON.stringify(result)}\n`, 0o644);
    output.emit(result);
    printReport(output, reports, settings);
    if (args.out) output.info(`result written to ${args.out}`);
  },
});
