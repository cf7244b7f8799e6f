/**
 * `ferry bench paper`: the experiments of VMware's Encrypted vMotion performance study, run on
 * this machine with ferry's engine, encrypted and plain alternating (ABBA) on the same guest:
 *
 * - workloads: the kv guest at the paper's five GET/SET mixes (Table 1), scaled to what this
 *   machine sustains, and an idle guest: migration time and switch-over (Figure 4), with
 *   `--verify` beside them;
 * - memory sizes: idle guests of 1, 2, 4 and 8 GiB, memory fully written (Figure 5);
 * - link rates: 2.5, 5, 7.5 and 10 Gb/s caps: wire throughput and CPU cores on each side (Figures 6-8);
 * - long distance: 1 Gb/s with round trips of 0.5 to 150 ms through the WAN emulator, a guest
 *   whose memory and disk are written through (as the paper's guest in use) under a steady
 *   workload: migration time and the guest's operations a second across the move (Figures 10-11);
 * - peers in the same run: iperf3, `openssl speed`, Node TLS, QEMU's own migration.
 *
 * Results go to one JSON file and one SVG chart per experiment; the ratios the issue sets as goals
 * are printed with them. Figures of two runs compare only as ratios (docs/performance.md).
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Argv } from 'yargs';
import { FerryError } from '../errors.js';
import type { SyntheticConfig, Workload } from '../guest/types.js';
import { formatBytes, formatDuration } from '../common/units.js';
import { sleep } from '../common/async.js';
import { defineCommand, type GlobalArgs } from '../cli/command.js';
import type { Output } from '../cli/output.js';
import { availableMemory, describeMachine, versionLine } from './machine.js';
import { median, ratio } from './stats.js';
import { PaperGuest, type Mode, type Move, type MoveOptions } from './paper-moves.js';
import { measurePeers, type Peers } from './paper-peers.js';
import { barChart, durationChart, renderSvg, timeChart, type DurationPoint } from './paper-charts.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const GBIT = 1e9 / 8;
/** The paper's Table 1: GET and SET operations a second of its five mixes. */
const MIXES = [
  [200_000, 0],
  [150_000, 50_000],
  [100_000, 100_000],
  [50_000, 150_000],
  [0, 200_000],
] as const;

interface Plan {
  rounds: number;
  /**
   * Unmeasured moves before a case's first round, plain then encrypted (there and back): the first
   * touch of a destination's memory costs what the machine's recent history makes it cost (up to
   * 2.5x a warm move in one run: docs/performance.md), and would fall on the first variant alone.
   */
  warmups: number;
  mixMemory: number;
  sizes: number[];
  capMemory: number;
  capsGbps: number[];
  wanMemory: number;
  wanDisk: number;
  wanDirtyBytesPerSecond: number;
  rttsMs: number[];
  qemuMemory: number;
  calibrateMs: number;
  sampleAroundMs: number;
}

const FULL: Plan = {
  rounds: 4,
  warmups: 2,
  mixMemory: 1 * GiB,
  sizes: [1 * GiB, 2 * GiB, 4 * GiB, 8 * GiB],
  capMemory: 2 * GiB,
  capsGbps: [2.5, 5, 7.5, 10],
  wanMemory: 512 * MiB,
  wanDisk: 256 * MiB,
  wanDirtyBytesPerSecond: 4 * MiB,
  rttsMs: [0.5, 5, 50, 100, 150],
  qemuMemory: 2 * GiB,
  calibrateMs: 3000,
  sampleAroundMs: 3000,
};

const QUICK: Plan = {
  rounds: 1,
  warmups: 0,
  mixMemory: 32 * MiB,
  sizes: [32 * MiB, 64 * MiB],
  capMemory: 64 * MiB,
  capsGbps: [2.5, 10],
  wanMemory: 32 * MiB,
  wanDisk: 16 * MiB,
  wanDirtyBytesPerSecond: 1 * MiB,
  rttsMs: [0.5, 50],
  qemuMemory: 0,
  calibrateMs: 1500,
  sampleAroundMs: 1000,
};

export interface Row extends Move {
  experiment: 'workloads' | 'sizes' | 'links' | 'distance';
  /** The x category of the experiment's chart: a workload, a size, a cap, a round trip. */
  category: string;
  round: number;
  /** Workloads: the move was verified (--verify), a variant beside encrypted and plain. */
  variant: 'encrypted' | 'plain' | 'encrypted+verify';
}

interface PaperArgs {
  quick: boolean;
  out: string;
  docs: boolean;
}

/** Where a ratio stands against its goal. */
interface Goal {
  name: string;
  value: number | null;
  goal: string;
  met: boolean | null;
}

const sizeLabel = (b: number) => (b >= GiB ? `${b / GiB} GiB` : `${b / MiB} MiB`);
const mixLabel = (gets: number, sets: number) => `${Math.round(gets / 1000)}k/${Math.round(sets / 1000)}k`;

class Experiments {
  readonly rows: Row[] = [];
  readonly skipped: string[] = [];
  private guests = 0;

  constructor(
    private readonly root: string,
    private readonly plan: Plan,
    private readonly progress: (line: string) => void,
  ) {}

  config(memoryBytes: number, workload: Workload, diskBytes = 0): SyntheticConfig {
    return {
      name: `paper${this.guests++}`,
      driver: 'synthetic',
      memoryBytes,
      diskBytes,
      workload,
      nic: 'virtio',
      encryptedMigration: 'opportunistic',
    };
  }

  async withGuest<T>(config: SyntheticConfig, fn: (g: PaperGuest) => Promise<T>): Promise<T> {
    const g = await PaperGuest.start(this.root, config);
    try {
      // A workload's rate is a count over its last whole second: wait for a steady one before
      // the first move, so that "before the move" is the guest at work.
      if (config.workload.kind !== 'idle') await g.steady(this.plan.calibrateMs);
      return await fn(g);
    } finally {
      await g.close();
    }
  }

  /** Every round: the variants in order, then reversed the next round (ABBA); each move recorded. */
  async rounds(
    g: PaperGuest,
    base: Pick<Row, 'experiment' | 'category'>,
    variants: Row['variant'][],
    options: MoveOptions = {},
  ): Promise<void> {
    const { sampleAroundMs: _unsampled, ...warmup } = options;
    for (let i = 0; i < this.plan.warmups; i++) {
      const mode: Mode = i % 2 === 0 ? 'plain' : 'encrypted';
      const move = await g.move(mode, warmup);
      this.progress(`  ${base.category}, warm-up (${mode}, not counted): ${move.ok ? `${move.totalMs} ms` : move.error}`);
      if (!move.ok) throw new FerryError('ERR_FERRY_ABORTED', `${base.experiment} ${base.category}: a warm-up move failed: ${move.error}`);
    }
    for (let round = 0; round < this.plan.rounds; round++) {
      for (const variant of round % 2 === 0 ? variants : [...variants].reverse()) {
        const mode: Mode = variant === 'plain' ? 'plain' : 'encrypted';
        const move = await g.move(mode, { ...options, verify: variant === 'encrypted+verify' });
        const row: Row = { ...move, ...base, round, variant };
        this.rows.push(row);
        this.progress(`  ${base.category}, ${variant}: ${describe(row)}`);
        if (!row.ok)
          throw new FerryError('ERR_FERRY_ABORTED', `${base.experiment} ${base.category}: the ${variant} move failed: ${row.error}`);
      }
    }
  }

  /** The kv rate this machine sustains, as a fraction of the paper's 200k operations a second. */
  async kvScale(): Promise<number> {
    const achieved: number[] = [];
    for (const [gets, sets] of [MIXES[0], MIXES[4]]) {
      const config = this.config(this.plan.mixMemory, { kind: 'kv', getsPerSecond: gets, setsPerSecond: sets });
      achieved.push(
        await this.withGuest(config, async (g) => {
          await sleep(this.plan.calibrateMs);
          return (await g.opsPerSecond()) / (gets + sets);
        }),
      );
    }
    // A margin below the measured rate, so the guest keeps its rate while it is being moved.
    return Math.min(1, Math.floor(Math.min(...achieved) * 0.8 * 20) / 20 || 0.05);
  }

  async workloads(scale: number): Promise<void> {
    this.progress(
      `workloads: idle and the paper's five kv mixes at ${Math.round(scale * 100)}% of their rates, ${sizeLabel(this.plan.mixMemory)}`,
    );
    const variants: Row['variant'][] = ['encrypted', 'plain', 'encrypted+verify'];
    await this.withGuest(this.config(this.plan.mixMemory, { kind: 'idle' }), (g) =>
      this.rounds(g, { experiment: 'workloads', category: 'idle' }, variants),
    );
    for (const [gets, sets] of MIXES) {
      const workload: Workload = { kind: 'kv', getsPerSecond: Math.round(gets * scale), setsPerSecond: Math.round(sets * scale) };
      await this.withGuest(this.config(this.plan.mixMemory, workload), (g) =>
        this.rounds(g, { experiment: 'workloads', category: mixLabel(gets, sets) }, variants),
      );
    }
  }

  async sizes(): Promise<void> {
    this.progress(`sizes: idle guests, memory fully written: ${this.plan.sizes.map(sizeLabel).join(', ')}`);
    for (const size of this.plan.sizes) {
      // Both guest processes map the guest while it moves; 2 GiB left for everything else.
      const need = 2 * size + 2 * GiB;
      if (availableMemory() < need) {
        const why = `sizes ${sizeLabel(size)}: skipped, ${formatBytes(availableMemory())} available, ${formatBytes(need)} needed`;
        this.skipped.push(why);
        this.progress(`  ${why}`);
        continue;
      }
      await this.withGuest(this.config(size, { kind: 'idle' }), (g) =>
        this.rounds(g, { experiment: 'sizes', category: sizeLabel(size) }, ['encrypted', 'plain']),
      );
    }
  }

  async links(): Promise<void> {
    this.progress(`links: a ${sizeLabel(this.plan.capMemory)} idle guest, caps of ${this.plan.capsGbps.join(', ')} Gb/s`);
    await this.withGuest(this.config(this.plan.capMemory, { kind: 'idle' }), async (g) => {
      for (const cap of this.plan.capsGbps)
        await this.rounds(g, { experiment: 'links', category: `${cap} Gb/s` }, ['encrypted', 'plain'], { maxBytesPerSecond: cap * GBIT });
    });
  }

  async distance(): Promise<void> {
    const { wanMemory, wanDisk, wanDirtyBytesPerSecond: rate } = this.plan;
    this.progress(
      `distance: 1 Gb/s, round trips of ${this.plan.rttsMs.join(', ')} ms; ${sizeLabel(wanMemory)} memory, ${sizeLabel(wanDisk)} disk, written through first, then writing ${formatBytes(rate)}/s`,
    );
    for (const rtt of this.plan.rttsMs) {
      // A fresh guest per round trip, memory and disk written through before the first move: each
      // move carries all of both (the paper's "entire state of the VM"), not only what the
      // workload happened to have reached, which grew from move to move.
      const config = this.config(wanMemory, { kind: 'dirty', bytesPerSecond: rate, fill: true }, wanDisk);
      await this.withGuest(config, (g) =>
        this.rounds(g, { experiment: 'distance', category: `${rtt} ms` }, ['encrypted', 'plain'], {
          rttMs: rtt,
          maxBytesPerSecond: GBIT,
          sampleAroundMs: this.plan.sampleAroundMs,
        }),
      );
    }
  }
}

function describe(r: Row): string {
  if (!r.ok) return `FAILED: ${r.error}`;
  const cores = `CPU cores ${r.sourceCores.toFixed(2)} / ${r.destinationCores === null ? '—' : r.destinationCores.toFixed(2)}`;
  const ops = r.opsBefore === null ? '' : `, guest ops/s ${Math.round(r.opsBefore)} before, ${Math.round(r.opsDuring ?? 0)} during`;
  return `${formatDuration(r.totalMs)}, switch-over ${r.switchoverMs === null ? '—' : formatDuration(r.switchoverMs)}, ${r.throughputGbps.toFixed(2)} Gbit/s, ${cores}${ops}`;
}

const pick = (rows: Row[], experiment: Row['experiment'], category: string, variant: Row['variant']) =>
  rows.filter((r) => r.ok && r.experiment === experiment && r.category === category && r.variant === variant);
const med = (rows: Row[], f: (r: Row) => number | null) => median(rows.map((r) => f(r) ?? NaN));

function goal(name: string, value: number | null, op: '<=' | '>=', bound: number): Goal {
  return { name, value, goal: `${op} ${bound}`, met: value === null ? null : op === '<=' ? value <= bound : value >= bound };
}

/** The issue's goals, each from medians of this run. */
export function goals(rows: Row[]): Goal[] {
  const out: Goal[] = [];
  const categories = (e: Row['experiment']) => [...new Set(rows.filter((r) => r.experiment === e).map((r) => r.category))];
  for (const e of ['workloads', 'sizes'] as const)
    for (const c of categories(e)) {
      const t = (v: Row['variant']) => med(pick(rows, e, c, v), (r) => r.totalMs);
      out.push(goal(`${e} ${c}: encrypted / plain duration`, ratio(t('encrypted'), t('plain')), '<=', 1.05));
    }
  for (const c of categories('workloads')) {
    const v = pick(rows, 'workloads', c, 'encrypted+verify');
    const e = pick(rows, 'workloads', c, 'encrypted');
    out.push(
      goal(
        `workloads ${c}: verified / unverified switch-over`,
        ratio(
          med(v, (r) => r.switchoverMs),
          med(e, (r) => r.switchoverMs),
        ),
        '<=',
        1.1,
      ),
    );
    out.push(
      goal(
        `workloads ${c}: verified / unverified duration`,
        ratio(
          med(v, (r) => r.totalMs),
          med(e, (r) => r.totalMs),
        ),
        '<=',
        1.05,
      ),
    );
  }
  for (const c of categories('links')) {
    const e = pick(rows, 'links', c, 'encrypted');
    const p = pick(rows, 'links', c, 'plain');
    out.push(
      goal(
        `links ${c}: encrypted / plain throughput`,
        ratio(
          med(e, (r) => r.throughputGbps),
          med(p, (r) => r.throughputGbps),
        ),
        '>=',
        0.97,
      ),
    );
    const gbps = med(e, (r) => r.throughputGbps);
    for (const side of ['sourceCores', 'destinationCores'] as const) {
      const extra = (med(e, (r) => r[side]) ?? NaN) - (med(p, (r) => r[side]) ?? NaN);
      const per10 = gbps && Number.isFinite(extra) ? (extra * 10) / gbps : null;
      out.push(
        goal(`links ${c}: encryption's CPU, cores per 10 Gb/s, ${side === 'sourceCores' ? 'source' : 'destination'}`, per10, '<=', 0.5),
      );
    }
  }
  const rtts = categories('distance');
  if (rtts.length >= 2) {
    const [near, far] = [rtts[0]!, rtts.at(-1)!];
    const t = (c: string) => med(pick(rows, 'distance', c, 'encrypted'), (r) => r.totalMs);
    out.push(goal(`distance: ${far} / ${near} duration, encrypted`, ratio(t(far), t(near)), '<=', 1.1));
    const f = pick(rows, 'distance', far, 'encrypted');
    out.push(
      goal(
        `distance ${far}: guest ops/s during / before the move, encrypted`,
        ratio(
          med(f, (r) => r.opsDuring),
          med(f, (r) => r.opsBefore),
        ),
        '>=',
        0.8,
      ),
    );
  }
  return out;
}

const variantMode = (v: Row['variant']) => v;

/** One chart per experiment: the specs and their file names. */
async function charts(rows: Row[]): Promise<{ name: string; svg: string }[]> {
  const durations = (e: Row['experiment'], variants: Row['variant'][]): DurationPoint[] => {
    const cats = [...new Set(rows.filter((r) => r.experiment === e).map((r) => r.category))];
    return cats.flatMap((category) =>
      variants.map((v) => {
        const sel = pick(rows, e, category, v);
        return {
          category,
          mode: variantMode(v),
          durationS: (med(sel, (r) => r.totalMs) ?? 0) / 1000,
          switchoverMs: med(sel, (r) => r.switchoverMs),
        };
      }),
    );
  };
  const linkRows = [...new Set(rows.filter((r) => r.experiment === 'links').map((r) => r.category))];
  const specs = [
    {
      name: 'paper-workloads',
      spec: durationChart(
        'Migration time and switch-over by workload (kv GET/SET mixes), encrypted and plain',
        'workload',
        durations('workloads', ['encrypted', 'plain', 'encrypted+verify']),
      ),
    },
    {
      name: 'paper-sizes',
      spec: durationChart(
        'Migration time and switch-over by memory size, idle guest',
        'memory',
        durations('sizes', ['encrypted', 'plain']),
      ),
    },
    {
      name: 'paper-links-throughput',
      spec: barChart(
        'Wire throughput by link cap, encrypted and plain',
        'link cap',
        'throughput (Gbit/s)',
        linkRows.flatMap((category) =>
          (['encrypted', 'plain'] as const).map((v) => ({
            category,
            series: v,
            value: med(pick(rows, 'links', category, v), (r) => r.throughputGbps) ?? 0,
          })),
        ),
      ),
    },
    {
      name: 'paper-links-cpu',
      spec: barChart(
        'CPU cores used by each side by link cap, encrypted and plain',
        'link cap',
        'CPU cores',
        linkRows.flatMap((category) =>
          (['encrypted', 'plain'] as const).flatMap((v) =>
            (['source', 'destination'] as const).map((side) => ({
              category,
              series: `${side}, ${v}`,
              value: med(pick(rows, 'links', category, v), (r) => (side === 'source' ? r.sourceCores : r.destinationCores)) ?? 0,
            })),
          ),
        ),
      ),
    },
    {
      name: 'paper-distance',
      spec: durationChart(
        'Migration time by round trip at 1 Gb/s, guest with disk',
        'round trip',
        durations('distance', ['encrypted', 'plain']),
      ),
    },
    {
      name: 'paper-distance-ops',
      spec: timeChart(
        "The guest's operations a second across a long-distance move (first round)",
        'guest ops/s',
        rows
          .filter((r) => r.experiment === 'distance' && r.round === 0)
          .flatMap((r) => r.ops.map((s) => ({ t: s.t / 1000, value: s.ops, series: r.category, panel: r.variant }))),
      ),
    },
  ];
  return Promise.all(specs.map(async ({ name, spec }) => ({ name, svg: await renderSvg(spec) })));
}

function stamp(): string {
  return new Date()
    .toISOString()
    .replace(/\.\d+Z$/, 'Z')
    .replace(/:/g, '');
}

async function run(output: Output, args: PaperArgs): Promise<void> {
  const plan = args.quick ? QUICK : FULL;
  const progress = (line: string) => output.info(line);
  const started = performance.now();
  const loadBefore = os.loadavg();
  const root = mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-paper-'));
  const ex = new Experiments(root, plan, progress);
  let peers: Peers;
  let scale: number;
  try {
    progress('calibrating: the kv rate this machine sustains...');
    scale = await ex.kvScale();
    progress(`  kv mixes run at ${Math.round(scale * 100)}% of the paper's 200k operations a second`);
    await ex.workloads(scale);
    await ex.sizes();
    await ex.links();
    await ex.distance();
    peers = await measurePeers({ quick: args.quick, qemuMemoryBytes: plan.qemuMemory, progress });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  const results = {
    subject: 'paper',
    quick: args.quick,
    date: new Date().toISOString(),
    durationMs: Math.round(performance.now() - started),
    machine: { ...describeMachine(), qemu: versionLine('qemu-system-x86_64'), loadBefore, loadAfter: os.loadavg() },
    kvScale: scale,
    plan,
    rows: ex.rows,
    skipped: ex.skipped,
    peers,
    goals: goals(ex.rows),
  };
  const base = `paper-${args.quick ? 'quick-' : ''}${stamp()}`;
  mkdirSync(args.out, { recursive: true });
  const jsonFile = path.join(args.out, `${base}.json`);
  writeFileSync(jsonFile, `${JSON.stringify(results, null, 2)}\n`);
  const files: string[] = [jsonFile];
  for (const c of await charts(ex.rows)) {
    const file = path.join(args.out, `${base}-${c.name}.svg`);
    writeFileSync(file, c.svg);
    files.push(file);
    if (args.docs) {
      mkdirSync('docs/charts', { recursive: true });
      copyFileSync(file, path.join('docs/charts', `${c.name}.svg`));
    }
  }
  output.emit({ type: 'result', ok: true, ...results, files });
  output.print(
    `ferry bench paper${args.quick ? ' --quick' : ''}: ${formatDuration(results.durationMs)}, load ${loadBefore[0]!.toFixed(2)} before, ${os.loadavg()[0]!.toFixed(2)} after`,
  );
  output.print(
    `peers: iperf3 ${fmt(peers.iperf3Gbps)} Gbit/s (2 streams), openssl speed ${fmt(peers.opensslGBps)} GB/s (64 KiB), Node TLS ${fmt(peers.nodeTlsGbps)} Gbit/s`,
  );
  for (const q of peers.qemu) output.print(`peers: QEMU ${q.mode}: ${formatDuration(q.totalMs)}, downtime ${formatDuration(q.downtimeMs)}`);
  for (const note of [...ex.skipped, ...peers.notes]) output.print(`note: ${note}`);
  for (const g of results.goals)
    output.print(`${g.name.padEnd(72)} ${fmt(g.value)} (goal ${g.goal}${g.met === null ? '' : g.met ? ': met' : ': NOT met'})`);
  for (const f of files) output.print(`wrote ${f}`);
}

const fmt = (n: number | null) => (n === null ? '—' : n.toFixed(2));

export const benchPaperCommand = defineCommand<PaperArgs>({
  command: 'paper',
  describe:
    "the Encrypted vMotion paper's experiments on this machine: workloads, memory sizes, link rates, long distance; JSON and SVG charts",
  builder: (yargs: Argv<GlobalArgs>) =>
    yargs
      .option('quick', {
        type: 'boolean',
        default: false,
        describe: 'a smoke test: tiny guests, one round, fewer points (about 3 minutes)',
      })
      .option('out', { type: 'string', default: 'bench/results', describe: 'the directory for the JSON result and the SVG charts' })
      .option('docs', {
        type: 'boolean',
        default: false,
        describe: 'also copy the charts to docs/charts/ (for the report in docs/performance.md)',
      })
      .example('$0 bench paper', 'every experiment (about 30 minutes on 2 cores), results in bench/results/')
      .example('$0 bench paper --quick --out /tmp/paper', 'a smoke test')
      .example('$0 bench paper --docs --json', 'the full run, its charts into docs/charts/, the result as JSON on stdout'),
  run,
});
