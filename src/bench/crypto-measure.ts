/**
 * The measurements behind `ferry bench crypto`: AES-256-GCM seal and open throughput per backend,
 * one thread and all threads; zero-page scan speed; and `openssl speed` in the same run. Every
 * figure is bytes of plaintext per second, in GB/s (10^9), the best of a few windows (see WINDOWS).
 */
import { spawnSync } from 'node:child_process';
import { availableParallelism, cpus, loadavg } from 'node:os';
import {
  cpuFeatures,
  loadBackend,
  nativeBackend,
  nativeImplementations,
  nativeUnavailableReason,
  zeroPages,
  zeroPagesTs,
  type AeadJob,
  type AeadKey,
  type Backend,
} from '../crypto/index.js';
import { loadAddon } from '../crypto/native-addon.js';

export const FRAME_SIZES = [4096, 65536, 262144, 1048576] as const;
/** Bytes sealed per batch call: enough frames that the per-call cost is amortised as in a stream. */
const BATCH_BYTES = 4 * 1048576;
const AAD_BYTES = 24;
const ZERO_SCAN_BYTES = 256 * 1048576;

export type Op = 'seal' | 'open';
export type ThreadMode = 'one' | 'all';

export interface ThroughputRow {
  backend: string;
  op: Op;
  threads: ThreadMode;
  /** How the work was spread, in words. */
  how: string;
  /** GB/s by frame size; null where the backend has no such mode. */
  gbps: Record<number, number | null>;
}

export interface CryptoBenchResult {
  machine: {
    cpu: string;
    cores: number;
    features: ReturnType<typeof cpuFeatures>;
    gcmImplementations: string[];
    node: string;
    openssl: string | null;
    loadavg: number[];
  };
  throughput: ThroughputRow[];
  openssl: { gbps: Record<number, number> | null; reason?: string };
  zeroScan: {
    bytes: number;
    allZeroGBps: number | null;
    nonZeroGBps: number | null;
    typescriptAllZeroGBps: number;
    readBandwidthGBps: number | null;
  };
  ratios: Record<string, { value: number | null; goal: number; met: boolean | null }>;
  notes: string[];
}

export interface CryptoBenchOptions {
  /** Seconds per measurement. */
  seconds: number;
  progress: (line: string) => void;
}

/** Windows per measurement, and `openssl speed` runs per size: each figure is the best of them, so a
 * burst of other work on the shared machine lowers one window instead of the figure. */
const WINDOWS = 3;
const OPENSSL_RUNS = 2;

/** The best rate, in GB/s, over WINDOWS windows of seconds/WINDOWS each. */
async function timed(seconds: number, bytesPerRound: number, round: () => Promise<unknown> | unknown): Promise<number> {
  await round(); // warm up: first-touch of outputs, JIT, pool threads
  let best = 0;
  for (let w = 0; w < WINDOWS; w++) {
    let bytes = 0;
    const start = performance.now();
    let elapsed: number;
    do {
      await round();
      bytes += bytesPerRound;
      elapsed = (performance.now() - start) / 1000;
    } while (elapsed < seconds / WINDOWS);
    best = Math.max(best, bytes / elapsed / 1e9);
  }
  return best;
}

function frames(size: number): { jobs: AeadJob[]; bytes: number } {
  const count = Math.max(2, Math.floor(BATCH_BYTES / size));
  const jobs: AeadJob[] = [];
  for (let i = 0; i < count; i++) {
    const iv = Buffer.alloc(12);
    iv.writeUInt32BE(i, 8);
    const input = Buffer.alloc(size, i & 0xff);
    jobs.push({ iv, aad: Buffer.alloc(AAD_BYTES, 1), input, output: Buffer.alloc(size + 16) });
  }
  return { jobs, bytes: count * size };
}

interface Variant {
  label: string;
  backend: Backend;
}

async function variants(notes: string[]): Promise<Variant[]> {
  const out: Variant[] = [];
  const why = nativeUnavailableReason();
  if (why === null) {
    for (const impl of nativeImplementations()) out.push({ label: `native:${impl}`, backend: nativeBackend(impl) });
  } else {
    notes.push(`native backend not measured: ${why}`);
  }
  out.push({ label: 'node', backend: await loadBackend('node') });
  out.push({ label: 'webcrypto', backend: await loadBackend('webcrypto') });
  return out;
}

/** Batches kept in flight in the native all-threads mode, so the figure is what the pool threads
 * can do: one batch at a time leaves the cores idle while each batch settles and the next is
 * handed over, and with two in flight each turnaround still idled a thread (all threads / one
 * thread 1.67-1.75 at two, 1.86-1.99 at four, in alternating runs on 2 cores, 2026-11-30). */
const NATIVE_BATCHES_IN_FLIGHT = 4;

function describeMode(backend: Backend, threads: ThreadMode, all: number): string {
  if (backend.name === 'native') {
    return threads === 'one' ? 'one batch at a time, 1 pool thread' : `${NATIVE_BATCHES_IN_FLIGHT} batches in flight, ${all} pool threads`;
  }
  if (backend.name === 'node') return 'calling thread';
  return threads === 'one' ? 'one call at a time' : 'whole batch in flight (libuv pool)';
}

/** The jobs of one batch of `size`-byte frames: for open, their sealed form. */
async function workFor(key: AeadKey, op: Op, size: number): Promise<{ jobs: AeadJob[]; bytes: number }> {
  const { jobs, bytes } = frames(size);
  if (op === 'seal') return { jobs, bytes };
  const sealed = await key.sealBatch(jobs.map(({ iv, aad, input }) => ({ iv, aad, input })));
  return { jobs: jobs.map((j, i) => ({ iv: j.iv, aad: j.aad, input: sealed[i]!, output: Buffer.alloc(size) })), bytes };
}

/** One row: a backend, an operation and a thread mode, over every frame size. */
async function measureRow(v: Variant, key: AeadKey, op: Op, threads: ThreadMode, seconds: number): Promise<ThroughputRow> {
  const all = availableParallelism();
  const row: ThroughputRow = { backend: v.label, op, threads, how: describeMode(v.backend, threads, all), gbps: {} };
  const kind = v.backend.name;
  for (const size of FRAME_SIZES) {
    if (kind === 'node' && threads === 'all') {
      row.gbps[size] = null; // node:crypto is synchronous: it has no all-threads mode
      continue;
    }
    const inFlight = kind === 'native' && threads === 'all' ? NATIVE_BATCHES_IN_FLIGHT : 1;
    const sets = await Promise.all(Array.from({ length: inFlight }, () => workFor(key, op, size)));
    const run = (jobs: AeadJob[]) => {
      const opts = { threads: threads === 'one' ? 1 : all };
      return op === 'seal' ? key.sealBatch(jobs, opts) : key.openBatch(jobs, opts);
    };
    let round: () => Promise<unknown>;
    if (kind === 'webcrypto' && threads === 'one') {
      const jobs = sets[0]!.jobs;
      round = async () => {
        for (const j of jobs) {
          const input = j.input as Uint8Array; // workFor makes one buffer per job, and one output
          const output = j.output as Uint8Array | undefined;
          await (op === 'seal' ? key.seal(j.iv, j.aad, input, output) : key.open(j.iv, j.aad, input, output));
        }
      };
    } else {
      round = () => Promise.all(sets.map((set) => run(set.jobs)));
    }
    row.gbps[size] = await timed(
      seconds,
      sets.reduce((n, set) => n + set.bytes, 0),
      round,
    );
  }
  return row;
}

export function opensslSpeed(notes: string[]): { gbps: Record<number, number> | null; version: string | null; reason?: string } {
  const version = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  if (version.error || version.status !== 0) {
    const reason = `openssl not runnable here (${version.error?.message ?? `exit ${version.status}`})`;
    notes.push(reason);
    return { gbps: null, version: null, reason };
  }
  const gbps: Record<number, number> = {};
  for (const size of FRAME_SIZES) {
    for (let run = 0; run < OPENSSL_RUNS; run++) {
      const r = spawnSync('openssl', ['speed', '-evp', 'aes-256-gcm', '-bytes', String(size), '-seconds', '1', '-mr'], {
        encoding: 'utf8',
      });
      const m = /^\+F:\d+:[^:]+:([\d.]+)/m.exec(r.stdout ?? '');
      if (!m) {
        const reason = `could not read \`openssl speed\` output for ${size} bytes`;
        notes.push(reason);
        return { gbps: null, version: version.stdout.trim(), reason };
      }
      gbps[size] = Math.max(gbps[size] ?? 0, Number(m[1]) / 1e9);
    }
  }
  return { gbps, version: version.stdout.trim() };
}

async function zeroScan(seconds: number): Promise<CryptoBenchResult['zeroScan']> {
  // Written memory: a fresh allocation that was never written maps the kernel's shared zero page
  // and would stay in cache, measuring nothing real.
  const buf = Buffer.allocUnsafeSlow(ZERO_SCAN_BYTES).fill(0x5a);
  const addon = loadAddon().addon;
  const nonZeroGBps = addon ? await timed(seconds, buf.length, () => zeroPages(buf)) : null;
  buf.fill(0);
  const allZeroGBps = addon ? await timed(seconds, buf.length, () => zeroPages(buf)) : null;
  const readBandwidthGBps = addon ? await timed(seconds, buf.length, () => addon.readAll(buf)) : null;
  const typescriptAllZeroGBps = await timed(seconds, buf.length, () => zeroPagesTs(buf));
  return { bytes: buf.length, allZeroGBps, nonZeroGBps, typescriptAllZeroGBps, readBandwidthGBps };
}

function ratio(a: number | null | undefined, b: number | null | undefined, goal: number) {
  const value = a != null && b != null && b > 0 ? a / b : null;
  return { value, goal, met: value === null ? null : value >= goal };
}

export async function benchCrypto(options: CryptoBenchOptions): Promise<CryptoBenchResult> {
  const notes: string[] = [];
  const loadBefore = loadavg();
  const list = await variants(notes);
  const keyBytes = Buffer.alloc(32, 0x42);
  const throughput: ThroughputRow[] = [];
  for (const v of list) {
    const key = await v.backend.importKey(keyBytes);
    try {
      for (const op of ['seal', 'open'] as const) {
        for (const threads of ['one', 'all'] as const) {
          options.progress(`measuring ${v.label} ${op}, ${threads === 'one' ? 'one thread' : 'all threads'}`);
          throughput.push(await measureRow(v, key, op, threads, options.seconds));
        }
      }
    } finally {
      key.destroy();
    }
  }
  options.progress('running openssl speed -evp aes-256-gcm');
  const openssl = opensslSpeed(notes);
  options.progress('measuring the zero-page scan');
  const zero = await zeroScan(options.seconds);

  const find = (label: string, op: Op, threads: ThreadMode, size: number) =>
    throughput.find((r) => r.backend === label && r.op === op && r.threads === threads)?.gbps[size] ?? null;
  const best = list.find((v) => v.backend.name === 'native')?.label ?? 'native';
  const ratios = {
    [`${best} seal 256KiB one thread / openssl speed 64KiB`]: ratio(find(best, 'seal', 'one', 262144), openssl.gbps?.[65536], 1.0),
    [`${best} seal 256KiB one thread / openssl speed 64KiB (aim)`]: ratio(find(best, 'seal', 'one', 262144), openssl.gbps?.[65536], 1.5),
    [`${best} seal 256KiB one thread / node seal 256KiB`]: ratio(
      find(best, 'seal', 'one', 262144),
      find('node', 'seal', 'one', 262144),
      2.0,
    ),
    [`${best} seal 256KiB all threads / one thread`]: ratio(find(best, 'seal', 'all', 262144), find(best, 'seal', 'one', 262144), 1.8),
    'zero scan all-zero / memory read bandwidth': ratio(zero.allZeroGBps, zero.readBandwidthGBps, 0.85),
    'zero scan all-zero / TypeScript Buffer.equals scan': ratio(zero.allZeroGBps, zero.typescriptAllZeroGBps, 1.0),
  };
  const loadAfter = loadavg();
  if (Math.max(...loadBefore, ...loadAfter) > 0.5 * availableParallelism()) {
    notes.push(
      `the machine was busy (load average ${loadBefore[0]!.toFixed(2)} before, ${loadAfter[0]!.toFixed(2)} after): compare ratios, not absolute figures`,
    );
  }
  return {
    machine: {
      cpu: cpus()[0]?.model ?? 'unknown',
      cores: availableParallelism(),
      features: cpuFeatures(),
      gcmImplementations: nativeImplementations(),
      node: process.version,
      openssl: openssl.version,
      loadavg: loadBefore,
    },
    throughput,
    openssl: { gbps: openssl.gbps, ...(openssl.reason ? { reason: openssl.reason } : {}) },
    zeroScan: zero,
    ratios,
    notes,
  };
}
