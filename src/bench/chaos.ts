/**
 * `ferry bench chaos`: an operator's bad night, on purpose. A temporary cluster (hosts a and b, their
 * agents on 127.0.0.1) and one synthetic guest dirtying its memory; each round `ferry migrate` (a
 * child process, as an operator runs it) moves the guest to the other host over a capped link, and
 * at a random moment one fault strikes: the source agent, the destination agent or the `ferry
 * migrate` process is SIGKILLed, or every data connection is cut. Killed agents come back a second
 * later. Then the round waits for the cluster to settle and checks what the hand-off promises:
 * exactly one host runs the guest, no migration of it is left anywhere, exactly one guest process
 * of it lives, and no guest directory is left on the other host. A seed makes a run repeatable.
 *
 * Figures: rounds clean; the time from `ferry migrate`'s end (or a restarted agent's start) to that
 * settled state; after `ferry migrate` was killed, how long the agents carried the move on; the agents' open files and resident memory over the rounds they
 * lived through, with their peaks (a soak: `--rounds 200 --fault-every 4`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, createConnection, type Server, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Argv } from 'yargs';
import { parseDocument } from 'yaml';
import { FerryError } from '../errors.js';
import { sleep } from '../common/async.js';
import { processAlive } from '../common/process.js';
import { parseRate, parseSize } from '../common/units.js';
import { defineCommand, type GlobalArgs } from '../cli/command.js';
import type { Output } from '../cli/output.js';
import { LocalCluster } from '../cli/demo-cluster.js';
import { loadCluster, type Cluster } from '../coordinator/cluster.js';
import { connectHost } from '../coordinator/connect.js';
import type { GuestConfig } from '../guest/types.js';

const BIN = fileURLToPath(new URL('../../bin/ferry', import.meta.url));
const HOSTS = ['a', 'b'] as const;
const GUEST = 'chaos0';
/** A killed agent is started again this long after the kill. */
const RESTART_AFTER_MS = 1000;
/** A round that has not settled this long after its fault is reported as not clean. */
const SETTLE_TIMEOUT_MS = 90_000;

export const FAULTS = ['none', 'kill-source-agent', 'kill-destination-agent', 'kill-migrate', 'cut-data'] as const;
export type Fault = (typeof FAULTS)[number];

/** Mulberry32: a small seeded generator, so that a run's faults and moments can be drawn again. */
function generator(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A TCP relay in front of a migration network whose connections can all be cut at once (it keeps listening). */
class Relay {
  private constructor(
    private readonly server: Server,
    private readonly sockets: Set<Socket>,
    readonly address: string,
  ) {}

  static async start(target: string): Promise<Relay> {
    const host = target.slice(0, target.lastIndexOf(':'));
    const port = Number(target.slice(target.lastIndexOf(':') + 1));
    const sockets = new Set<Socket>();
    const server = createServer((inbound) => {
      const outbound = createConnection({ host, port });
      for (const s of [inbound, outbound]) {
        sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => {
          sockets.delete(s);
          inbound.destroy();
          outbound.destroy();
        });
      }
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new Relay(server, sockets, `127.0.0.1:${(server.address() as { port: number }).port}`);
  }

  /** Every relayed connection dropped; new ones are let through (the sender redials). */
  cut(): void {
    for (const s of this.sockets) s.destroy();
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export interface ChaosRound {
  round: number;
  from: string;
  to: string;
  fault: Fault;
  /** When the fault struck, ms after `ferry migrate` started (null: none, or the move ended first). */
  atMs: number | null;
  /** `ferry migrate`'s exit status (null: killed). */
  exitCode: number | null;
  /** Where the guest runs once settled (null: nowhere, or on both). */
  host: string | null;
  /** From `ferry migrate`'s end, and from a restarted agent's start, to the settled state. */
  settledAfterMigrateMs: number | null;
  settledAfterRestartMs: number | null;
  /**
   * kill-migrate: from the kill to the settled state. The agents carry the move on without the
   * CLI, so this is the rest of the move, not a time to settle.
   */
  movedOnAfterKillMs: number | null;
  clean: boolean;
  problems: string[];
}

interface AgentSample {
  pid: number;
  openFiles: number;
  rssBytes: number;
}

class Chaos {
  readonly local = LocalCluster.create();
  cluster!: Cluster;
  private readonly relays = new Map<string, Relay>();
  private migrateChild: ChildProcess | null = null;
  closing = false;

  /** The cluster, each host's migration network behind a relay (its advertised address). */
  async start(): Promise<void> {
    await this.local.start(HOSTS);
    const file = this.local.clusterFile;
    const doc = parseDocument(readFileSync(file, 'utf8'));
    const loaded = await loadCluster(file);
    for (const h of HOSTS) {
      const listen = loaded.hosts.get(h)!.networks[0]!.listen;
      const relay = await Relay.start(listen);
      this.relays.set(h, relay);
      doc.setIn(['hosts', h, 'networks'], [{ listen, advertise: relay.address }]);
    }
    writeFileSync(file, doc.toString(), { mode: 0o600 });
    this.cluster = await loadCluster(file);
  }

  async call<T>(host: string, fn: (client: Awaited<ReturnType<typeof connectHost>>) => Promise<T>): Promise<T> {
    const client = await connectHost(this.cluster, host, undefined, 3000);
    try {
      return await fn(client);
    } finally {
      client.close();
    }
  }

  async createGuest(memoryBytes: number, dirtyBytesPerSecond: number): Promise<void> {
    const config: GuestConfig = {
      name: GUEST,
      driver: 'synthetic',
      memoryBytes,
      diskBytes: 0,
      workload: { kind: 'dirty', bytesPerSecond: dirtyBytesPerSecond },
      nic: 'virtio',
      encryptedMigration: 'required',
    };
    await this.call('a', (c) => c.call('guest.create', { config }, { timeoutMs: 5 * 60_000 }));
  }

  /** One round: the move, its fault, the settling, the checks. */
  async round(i: number, from: string, fault: Fault, faultAtMs: number, bandwidth: string): Promise<ChaosRound> {
    const to = from === 'a' ? 'b' : 'a';
    const r: ChaosRound = {
      round: i,
      from,
      to,
      fault,
      atMs: null,
      exitCode: null,
      host: null,
      settledAfterMigrateMs: null,
      settledAfterRestartMs: null,
      movedOnAfterKillMs: null,
      clean: false,
      problems: [],
    };
    const started = performance.now();
    const child = spawn(
      process.execPath,
      [BIN, 'migrate', GUEST, '--to', to, '--json', '--bandwidth', bandwidth, '--cluster', this.local.clusterFile],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.migrateChild = child;
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let endedAt: number | null = null;
    void exited.then(() => (endedAt = performance.now()));
    let restartedAt: number | null = null;
    if (fault !== 'none') {
      await Promise.race([sleep(faultAtMs), exited]);
      if (endedAt === null) {
        r.atMs = Math.round(performance.now() - started);
        restartedAt = await this.strike(fault, from, to, child);
      }
    }
    r.exitCode = await exited;
    this.migrateChild = null;
    const settledAt = await this.settled(r);
    if (settledAt !== null && endedAt !== null) {
      const after = Math.max(0, Math.round(settledAt - endedAt));
      if (fault === 'kill-migrate' && r.atMs !== null) r.movedOnAfterKillMs = after;
      else r.settledAfterMigrateMs = after;
    }
    if (settledAt !== null) {
      if (restartedAt !== null) r.settledAfterRestartMs = Math.max(0, Math.round(settledAt - restartedAt));
    }
    if (r.exitCode !== null && r.exitCode !== 0 && r.exitCode !== 1)
      r.problems.push(`ferry migrate exited ${r.exitCode}: ${lastLine(stderr)}`);
    // What the CLI said must be what happened: exit 0 only for a guest that moved.
    if (r.exitCode === 0 && r.host !== to) r.problems.push(`ferry migrate said it moved the guest, which runs on ${r.host}`);
    r.clean = r.problems.length === 0;
    return r;
  }

  /** Strikes; a killed agent is started again a moment later, and the return is when that began (null for the other faults). */
  private async strike(fault: Fault, from: string, to: string, child: ChildProcess): Promise<number | null> {
    if (fault === 'kill-migrate') {
      child.kill('SIGKILL');
      return null;
    }
    if (fault === 'cut-data') {
      this.relays.get(to)!.cut();
      return null;
    }
    const host = fault === 'kill-source-agent' ? from : to;
    await this.local.killAgent(host, 'SIGKILL');
    await sleep(RESTART_AFTER_MS);
    const at = performance.now();
    if (!this.closing) await this.local.restartAgent(host);
    return at;
  }

  /**
   * Waits until both agents answer, neither has a migration of the guest, and the guest is listed
   * on exactly one host, running; then checks its processes and directories. Returns when it settled.
   */
  private async settled(r: ChaosRound): Promise<number | null> {
    const deadline = performance.now() + SETTLE_TIMEOUT_MS;
    let last = 'not asked yet';
    while (performance.now() < deadline && !this.closing) {
      try {
        const views = await Promise.all(
          HOSTS.map(async (h) => ({
            host: h,
            guests: (await this.call(h, (c) => c.call('guest.list', {}))).guests.filter((g) => g.name === GUEST),
            migrations: (await this.call(h, (c) => c.call('migration.list', {}))).migrations.filter((m) => m.guest === GUEST),
          })),
        );
        const running = views.filter((v) => v.guests.some((g) => g.state === 'running'));
        const busy = views.flatMap((v) => v.migrations.map((m) => `${v.host}: ${m.role} ${m.phase}`));
        const others = views.flatMap((v) => v.guests.filter((g) => g.state !== 'running').map((g) => `${v.host}: ${g.state}`));
        if (running.length === 1 && busy.length === 0 && others.length === 0) {
          const at = performance.now();
          r.host = running[0]!.host;
          this.checkLeftovers(r);
          return at;
        }
        last = `running on [${running.map((v) => v.host).join(', ')}], migrations [${busy.join('; ')}], other copies [${others.join('; ')}]`;
        if (running.length > 1) {
          r.problems.push(`the guest runs on ${running.map((v) => v.host).join(' and ')}`);
          return null;
        }
      } catch (err) {
        last = `an agent did not answer: ${(err as Error).message}`;
      }
      await sleep(100);
    }
    r.problems.push(`not settled within ${SETTLE_TIMEOUT_MS / 1000} s: ${last}`);
    return null;
  }

  /** Exactly one guest process of the guest lives, and the host that does not run it keeps no directory of it. */
  private checkLeftovers(r: ChaosRound): void {
    const processes = guestProcesses(this.local.root);
    if (processes.length !== 1) r.problems.push(`${processes.length} guest processes of ${GUEST} (pids ${processes.join(', ')})`);
    for (const h of HOSTS) {
      if (h === r.host) continue;
      const dir = path.join(this.local.root, `host-${h}`, 'guests', GUEST);
      if (existsSync(dir)) r.problems.push(`host ${h} keeps ${dir}`);
    }
  }

  sample(): Record<string, AgentSample | null> {
    const out: Record<string, AgentSample | null> = {};
    for (const h of HOSTS) {
      const a = this.local.agent(h);
      out[h] = a ? { pid: a.pid, openFiles: openFiles(a.pid), rssBytes: rss(a.pid) } : null;
    }
    return out;
  }

  async close(): Promise<void> {
    this.closing = true;
    this.migrateChild?.kill('SIGKILL');
    for (const relay of this.relays.values()) await relay.close();
    await this.local.close();
  }
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop() ?? '';
}

/** Live guest processes (dist/guest/.../main.js) of the guest, by command line. */
function guestProcesses(root: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      if (!processAlive(Number(p))) continue;
      if (argv.some((a) => /guest[/\\].*main\.js$/.test(a)) && argv.some((a) => a.startsWith(root) && a.endsWith(`${path.sep}${GUEST}`)))
        pids.push(Number(p));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function openFiles(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

function rss(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : -1;
  } catch {
    return -1;
  }
}

/** An agent's open files and resident memory after its first and its last round, and their peaks between. */
export interface AgentSoak {
  pid: number;
  rounds: number;
  openFiles: [number, number];
  rssMiB: [number, number];
  peak: { openFiles: number; rssMiB: number };
}

/** Per host, the agent process that lived through the most rounds, and its soak figures. */
export function soak(samples: Record<string, AgentSample | null>[]): Record<string, AgentSoak> {
  const out: Record<string, AgentSoak> = {};
  for (const h of HOSTS) {
    // The longest run of rounds with one pid: the agent that lived longest.
    let best: AgentSample[] = [];
    let run: AgentSample[] = [];
    for (const s of samples.map((x) => x[h] ?? null)) {
      if (s && run.length > 0 && run[0]!.pid === s.pid) run.push(s);
      else run = s ? [s] : [];
      if (run.length > best.length) best = [...run];
    }
    if (best.length === 0) continue;
    const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
    out[h] = {
      pid: best[0]!.pid,
      rounds: best.length,
      openFiles: [best[0]!.openFiles, best.at(-1)!.openFiles],
      rssMiB: [mib(best[0]!.rssBytes), mib(best.at(-1)!.rssBytes)],
      peak: { openFiles: Math.max(...best.map((x) => x.openFiles)), rssMiB: mib(Math.max(...best.map((x) => x.rssBytes))) },
    };
  }
  return out;
}

interface ChaosArgs extends GlobalArgs {
  rounds: number;
  seed?: number;
  memory: string;
  dirty: string;
  bandwidth: string;
  faultEvery: number;
}

function percentile(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

async function run(output: Output, args: ChaosArgs): Promise<void> {
  if (!Number.isInteger(args.rounds) || args.rounds < 1 || args.rounds > 10_000)
    throw new FerryError('ERR_FERRY_USAGE', '--rounds: a whole number from 1 to 10000');
  if (!Number.isInteger(args.faultEvery) || args.faultEvery < 1 || args.faultEvery > 10_000)
    throw new FerryError('ERR_FERRY_USAGE', '--fault-every: a whole number from 1 to 10000');
  const memoryBytes = parseSize(args.memory, '--memory');
  const dirty = parseRate(args.dirty, '--dirty');
  const linkBytesPerSecond = parseRate(args.bandwidth, '--bandwidth');
  const seed = args.seed ?? Math.floor(Math.random() * 2 ** 31);
  const random = generator(seed);
  // A move's expected length: the fault falls anywhere in it, its first passes to its hand-off.
  const expectedMs = Math.max(1000, (memoryBytes / linkBytesPerSecond) * 1000 * 1.3);
  const progress = (line: string) => output.info(line);
  const chaos = new Chaos();
  let interrupted: string | null = null;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted = signal;
    void chaos.close();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const rounds: ChaosRound[] = [];
  const samples: Record<string, AgentSample | null>[] = [];
  const started = performance.now();
  const loadBefore = os.loadavg();
  try {
    progress(`chaos: seed ${seed}, ${args.rounds} rounds, a ${args.memory} guest dirtying ${args.dirty}/s over a ${args.bandwidth}/s link`);
    await chaos.start();
    await chaos.createGuest(memoryBytes, dirty);
    let where = 'a';
    for (let i = 0; i < args.rounds && !chaos.closing; i++) {
      // Every round draws from all faults (none among them); with --fault-every N, every Nth
      // round draws a real fault and the others are plain moves.
      const fault =
        args.faultEvery === 1
          ? FAULTS[Math.floor(random() * FAULTS.length)]!
          : (i + 1) % args.faultEvery === 0
            ? FAULTS[1 + Math.floor(random() * (FAULTS.length - 1))]!
            : 'none';
      const at = Math.round(200 + random() * expectedMs);
      const r = await chaos.round(i, where, fault, at, args.bandwidth);
      rounds.push(r);
      samples.push(chaos.sample());
      if (r.host) where = r.host;
      progress(
        `  round ${i + 1}: ${r.from} -> ${r.to}, ${r.fault}${r.atMs !== null ? ` at ${r.atMs} ms` : ''}: exit ${r.exitCode ?? 'killed'}, guest on ${r.host ?? '?'}` +
          `${r.settledAfterMigrateMs !== null ? `, settled ${r.settledAfterMigrateMs} ms after ferry migrate` : ''}` +
          `${r.settledAfterRestartMs !== null ? `, ${r.settledAfterRestartMs} ms after the restart` : ''}` +
          `${r.movedOnAfterKillMs !== null ? `, the move went on ${r.movedOnAfterKillMs} ms after the kill` : ''}: ${r.clean ? 'clean' : `NOT clean (${r.problems.join('; ')})`}`,
      );
      if (!r.host) break; // nowhere to move from: the run stops here, the round says why
    }
  } finally {
    await chaos.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (interrupted) throw new FerryError('ERR_FERRY_ABORTED', `interrupted by ${interrupted}; everything the bench made is removed`);
  const clean = rounds.filter((r) => r.clean).length;
  const afterMigrate = rounds.flatMap((r) => (r.settledAfterMigrateMs !== null ? [r.settledAfterMigrateMs] : []));
  const afterRestart = rounds.flatMap((r) => (r.settledAfterRestartMs !== null ? [r.settledAfterRestartMs] : []));
  const afterKill = rounds.flatMap((r) => (r.movedOnAfterKillMs !== null ? [r.movedOnAfterKillMs] : []));
  const byFault = Object.fromEntries(FAULTS.map((f) => [f, rounds.filter((r) => r.fault === f).length]));
  const figures = {
    rounds: rounds.length,
    clean,
    byFault,
    settledAfterMigrateMs: { median: percentile(afterMigrate, 0.5), max: percentile(afterMigrate, 1) },
    settledAfterRestartMs: { median: percentile(afterRestart, 0.5), max: percentile(afterRestart, 1) },
    movedOnAfterKillMs: { median: percentile(afterKill, 0.5), max: percentile(afterKill, 1) },
    agents: soak(samples),
  };
  output.emit({
    type: 'result',
    ok: clean === rounds.length,
    subject: 'chaos',
    seed,
    settings: { memory: args.memory, dirty: args.dirty, bandwidth: args.bandwidth, faultEvery: args.faultEvery },
    durationMs: Math.round(performance.now() - started),
    machine: { loadBefore, loadAfter: os.loadavg(), cpus: os.cpus().length },
    figures,
    rounds,
  });
  output.print(`${clean} of ${rounds.length} rounds clean (seed ${seed}; faults ${JSON.stringify(byFault)})`);
  output.print(
    `settled after ferry migrate ended: median ${figures.settledAfterMigrateMs.median ?? '-'} ms, max ${figures.settledAfterMigrateMs.max ?? '-'} ms (goal <= 2000)`,
  );
  output.print(
    `settled after a killed agent restarted: median ${figures.settledAfterRestartMs.median ?? '-'} ms, max ${figures.settledAfterRestartMs.max ?? '-'} ms (goal <= 5000)`,
  );
  if (afterKill.length > 0)
    output.print(
      `after ferry migrate was killed the agents carried the move on: median ${figures.movedOnAfterKillMs.median} ms, max ${figures.movedOnAfterKillMs.max} ms to its end`,
    );
  for (const [h, a] of Object.entries(figures.agents))
    output.print(
      `agent ${h} (pid ${a.pid}, ${a.rounds} rounds): open files ${a.openFiles[0]} -> ${a.openFiles[1]} (peak ${a.peak.openFiles}), resident ${a.rssMiB[0]} -> ${a.rssMiB[1]} MiB (peak ${a.peak.rssMiB})`,
    );
  if (clean !== rounds.length)
    throw new FerryError('ERR_FERRY_ABORTED', `${rounds.length - clean} of ${rounds.length} rounds were not clean`);
}

export const benchChaosCommand = defineCommand<ChaosArgs>({
  command: 'chaos',
  describe: 'randomised faults during migrations (agents and ferry migrate killed, data cut): exactly one running guest after each',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .option('rounds', { type: 'number', default: 20, describe: 'moves, each with a fault drawn at random (or none)' })
      .option('seed', { type: 'number', describe: 'draw the same faults at the same moments as a run before (its result names its seed)' })
      .option('memory', { type: 'string', default: '256MiB', describe: "the guest's memory" })
      .option('dirty', { type: 'string', default: '30MB', describe: 'how fast the guest dirties its memory, a second' })
      .option('bandwidth', { type: 'string', default: '400Mbit', describe: 'the link cap of every move (--bandwidth)' })
      .option('fault-every', { type: 'number', default: 1, describe: 'a fault in every Nth round only, plain moves between (a soak)' })
      .example('$0 bench chaos --rounds 50', 'fifty faulted moves; exit 1 if any round is not clean')
      .example(
        '$0 bench chaos --rounds 200 --fault-every 4 --json',
        "a soak: 200 moves, a fault every fourth; the agents' open files and memory over the run",
      )
      .example('$0 bench chaos --seed 1234', 'the same faults again') as unknown as Argv<ChaosArgs>,
  run,
});
