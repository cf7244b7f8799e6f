/**
 * One QEMU guest that `ferry bench qemu` moves again and again on this host, now through ferry,
 * now by QEMU alone, so that every variant moves the same virtual machine (one command line, one
 * fill of its memory). Between moves it changes hands the way the product allows: a ferry guest
 * process that dies leaves its QEMU running (killed here, by its pid), and a new guest process
 * adopts a QEMU it finds in its directory. Each move goes to a fresh directory and QEMU, as a
 * migration to another host would; the directory left behind is checked for the test guest's
 * reports of damaged memory and removed.
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { FerryError, toFerryError } from '../errors.js';
import { sleep } from '../common/async.js';
import type { GuestClient } from '../guest/client.js';
import { startGuest } from '../guest/process.js';
import { BOOT_DIR, CONSOLE_LOG, QEMU_PID_FILE } from '../guest/qemu/argv.js';
import { BOOT_FILE_NAMES } from '../guest/qemu/config.js';
import { createQemu } from '../guest/qemu/create.js';
import { mirroredDisks, prepareDestinationDisks } from '../guest/qemu/disks.js';
import { Qemu } from '../guest/qemu/hypervisor.js';
import { UNCAPPED_BANDWIDTH } from '../guest/qemu/migrate-out.js';
import { parseTestGuestLog, type TestGuestLine } from '../guest/qemu/test-guest.js';
import type { GuestCreateRequest, QemuConfig } from '../guest/types.js';
import { migrateLocally } from './local-migration.js';
import { CpuMeter } from './process-cpu.js';
import { migrateByQemu, type QemuMode } from './qemu-migration.js';
import { SocketBytes } from './socket-bytes.js';

export type GuestState = 'paused' | 'running';

/** What one move measured; null where a figure could not be had (the reason in `notes`). */
export interface MoveFigures {
  ok: boolean;
  error: string | null;
  /** From the start of the migration to the guest running at the destination (paused guests: loaded there). */
  totalMs: number | null;
  /** Running guests: from the source's stop to the destination running it. Paused: QEMU's own figure. */
  downtimeMs: number | null;
  /** QEMU's query-migrate total-time and downtime at the source. */
  qemuTotalMs: number | null;
  qemuDowntimeMs: number | null;
  /** ferry: the channel's bytes on its sockets, both ways (result.wireBytes). QEMU alone: what crossed its TCP connections. */
  wireBytes: number | null;
  /** The kernel's count of TCP payload on the move's connections (ss), both ways: the same yardstick for both. */
  socketBytes: number | null;
  /** QEMU's query-migrate ram.transferred. */
  qemuRamBytes: number | null;
  /** A guest with disks: the bytes the mirrors wrote (their jobs' offsets), and ms until every mirror was in sync. */
  diskBytes: number | null;
  diskReadyMs: number | null;
  /** CPU seconds of each side's processes (QEMU, and ferry's guest process): the source from the move's start, the destination over its life. */
  cpuSeconds: { source: number | null; destination: number | null };
  /** Of those, the guest's own vCPU threads. */
  vcpuSeconds: { source: number | null; destination: number | null };
  /** The bench's clock around the whole move, starting the destination included. */
  wallMs: number;
  /** Lines in which the test guest reported damaged memory, in the copy this move left. */
  damage: string[];
  notes: string[];
}

type Holder = { carrier: 'ferry'; client: GuestClient } | { carrier: 'qemu'; qemu: Qemu };

/** How long the guest runs (or sits paused) before a move, so each starts from the same steady state. */
export const SETTLE_MS = 1000;
const FILL_TIMEOUT_MS = 15 * 60_000;

function consoleOf(dir: string): TestGuestLine[] {
  try {
    return parseTestGuestLog(readFileSync(path.join(dir, CONSOLE_LOG), 'utf8'));
  } catch {
    return [];
  }
}

/**
 * Waits until the test guest in `dir` has filled its memory (`disk`: its disk's region, which comes
 * after); that fill's line. Throws when it stops with an error or does not fill within
 * `timeoutMs`; `progress` hears of a long fill every 15 s.
 */
export async function waitForFill(
  dir: string,
  progress: (line: string) => void = () => {},
  timeoutMs = FILL_TIMEOUT_MS,
  what: 'memory' | 'disk' = 'memory',
): Promise<{ pages: number; ms: number }> {
  const deadline = performance.now() + timeoutMs;
  const started = performance.now();
  const kind = what === 'memory' ? 'filled' : 'disk-filled';
  let last = -Infinity;
  for (;;) {
    const lines = consoleOf(dir);
    const filled = lines.find((l) => l.kind === kind);
    if (filled?.kind === 'filled' || filled?.kind === 'disk-filled') return filled;
    const bad = lines.find((l) => l.kind === 'error');
    if (bad) throw new FerryError('ERR_FERRY_QEMU', `the test guest stopped: ${JSON.stringify(bad)}`);
    if (performance.now() > deadline)
      throw new FerryError('ERR_FERRY_TIMEOUT', `the test guest did not fill its ${what} within ${timeoutMs / 1000} s`);
    if (performance.now() - last > 15_000) {
      last = performance.now();
      progress(`  the test guest fills its ${what} (${Math.round((performance.now() - started) / 1000)} s)...`);
    }
    await sleep(200);
  }
}

/** The guest's boot files, from its directory on one side to another's (QEMU alone takes no files over). */
export function copyBootFiles(config: QemuConfig, from: string, to: string): void {
  mkdirSync(path.join(to, BOOT_DIR), { recursive: true, mode: 0o700 });
  for (const name of BOOT_FILE_NAMES) {
    if (config[name]) copyFileSync(path.join(from, BOOT_DIR, name), path.join(to, BOOT_DIR, name));
  }
}

function damageIn(dir: string): string[] {
  return consoleOf(dir)
    .filter((l) => l.kind === 'fail' || l.kind === 'error' || (l.kind === 'check' && !l.ok) || (l.kind === 'disk-check' && !l.ok))
    .map((l) => JSON.stringify(l));
}

function pidIn(dir: string): number {
  const pid = Number(readFileSync(path.join(dir, QEMU_PID_FILE), 'utf8').trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) throw new FerryError('ERR_FERRY_INTERNAL', `no QEMU pid in ${dir}`);
  return pid;
}

function gone(pid: number): boolean {
  try {
    return /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return true;
  }
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

export class BenchGuest {
  /** Every process this guest's moves started (guest processes, QEMUs), for close(). */
  private readonly pids = new Set<number>();
  private generation = 0;

  private constructor(
    private readonly root: string,
    readonly config: QemuConfig,
    private dir: string,
    private holder: Holder,
    private readonly settleMs: number,
  ) {}

  /** Creates the guest under `root` and waits until the test guest has filled its memory. */
  static async create(
    root: string,
    request: GuestCreateRequest,
    progress: (line: string) => void,
    settleMs = SETTLE_MS,
  ): Promise<BenchGuest> {
    const dir = path.join(root, 'g0');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const config = await createQemu(request, dir);
    const client = await startGuest(dir, config);
    const guest = new BenchGuest(root, config, dir, { carrier: 'ferry', client }, settleMs);
    guest.pids.add(client.pid);
    guest.pids.add(pidIn(dir));
    const filled = await waitForFill(dir, progress);
    progress(`  the test guest filled ${filled.pages} pages in ${(filled.ms / 1000).toFixed(1)} s`);
    if (/(^| )disk=[1-9]/.test(config.append)) {
      const disk = await waitForFill(dir, progress, FILL_TIMEOUT_MS, 'disk');
      progress(`  the test guest filled ${disk.pages} pages of its disk in ${(disk.ms / 1000).toFixed(1)} s`);
    }
    return guest;
  }

  /** Moves the guest through ferry's channel (src/bench/local-migration.ts plays both agents). */
  async moveByFerry(o: { mode: 'encrypted' | 'plain'; streams: number; state: GuestState; maxDowntimeMs: number }): Promise<MoveFigures> {
    const client = await this.asFerry();
    await this.setState(o.state);
    const sourceQemu = pidIn(this.dir);
    const sourcePids = [client.pid, sourceQemu];
    const dstDir = this.nextDir();
    const figures = emptyFigures();
    let counter: SocketBytes | null = null;
    const meter = new CpuMeter().mark(sourcePids);
    const t0 = performance.now();
    let m;
    try {
      m = await migrateLocally(client, dstDir, this.config, {
        mode: o.mode,
        streams: o.streams,
        maxDowntimeMs: o.maxDowntimeMs,
        route: async (network) => {
          counter = await this.countSockets(Number(network.slice(network.lastIndexOf(':') + 1)), figures);
          return network;
        },
      });
    } catch (err) {
      await (counter as SocketBytes | null)?.stop();
      this.forgetDir(dstDir);
      return failed(figures, err, t0);
    }
    figures.wallMs = Math.round(performance.now() - t0);
    const incoming = m.incoming.client;
    this.pids.add(incoming.pid);
    const r = m.source.result;
    if (m.source.phase !== 'committed' || !r) {
      await (counter as SocketBytes | null)?.stop();
      if (m.destination.phase === 'committed')
        throw new FerryError('ERR_FERRY_INTERNAL', `the destination committed but the source says ${m.source.phase}`);
      this.forgetDir(dstDir);
      figures.error = r?.error ? `${r.error.code}: ${r.error.message}` : `the migration ended ${m.source.phase}`;
      return figures;
    }
    const destinationPids = [incoming.pid, pidIn(dstDir)];
    this.pids.add(destinationPids[1]!);
    this.readCpu(figures, meter, sourcePids, destinationPids);
    figures.ok = true;
    figures.totalMs = Math.round(r.totalMs);
    figures.downtimeMs = r.downtimeMs;
    figures.qemuTotalMs = r.hypervisor?.totalMs ?? null;
    figures.qemuDowntimeMs = r.hypervisor?.downtimeMs ?? null;
    figures.qemuRamBytes = r.hypervisor?.ramBytes ?? null;
    figures.wireBytes = r.wireBytes ? r.wireBytes.sent + r.wireBytes.received : null;
    figures.diskBytes = r.disks?.bytes ?? null;
    figures.diskReadyMs = r.disks?.readyMs ?? null;
    if (!r.wireBytes) figures.notes.push('the source reported no wire bytes');
    // The source's copy ends (its QEMU quits): its connections close, and the count is whole.
    await client.finish();
    this.pids.delete(client.pid);
    await this.waitGone(sourceQemu);
    await this.finishCount(counter ? [counter] : [], figures);
    this.leave(dstDir, { carrier: 'ferry', client: incoming }, figures);
    return figures;
  }

  /** Moves the guest by QEMU's own migration over TCP, to a QEMU started here with the same command line. */
  async moveByQemu(o: {
    mode: QemuMode;
    channels: number;
    state: GuestState;
    maxDowntimeMs: number;
    tlsDir: string;
  }): Promise<MoveFigures> {
    const source = await this.asQemu();
    await this.setState(o.state);
    const dstDir = this.nextDir();
    const figures = emptyFigures();
    const t0 = performance.now();
    const counters: SocketBytes[] = [];
    let destination: Qemu | null = null;
    const disks = this.config.disks ?? [];
    try {
      copyBootFiles(this.config, this.dir, dstDir);
      // The images QEMU opens, as ferry's destination makes them (its mirror then fills them).
      await prepareDestinationDisks(disks, dstDir, this.config.name);
      destination = await Qemu.start(this.config, dstDir, { incoming: true });
      this.pids.add(destination.pid);
      const meter = new CpuMeter().mark([source.pid]);
      const move = await migrateByQemu(source.qmp, destination.qmp, {
        mode: o.mode,
        channels: o.channels,
        tlsDir: o.tlsDir,
        maxBandwidth: UNCAPPED_BANDWIDTH,
        downtimeLimitMs: o.maxDowntimeMs,
        // As ferry's moves have it (migrate-out.ts), so the two differ only in what carries the stream.
        autoConverge: true,
        resumeDestination: o.state === 'running',
        disks: mirroredDisks(disks).map((d) => d.index),
        onListening: async (port) => {
          const counter = await this.countSockets(port, figures);
          if (counter) counters.push(counter);
        },
      });
      figures.wallMs = Math.round(performance.now() - t0);
      this.readCpu(figures, meter, [source.pid], [destination.pid]);
      figures.ok = true;
      const end = move.resumedAt ?? move.loadedAt;
      figures.totalMs = Math.round(end - move.startedAt);
      figures.qemuTotalMs = move.info.totalTimeMs ?? null;
      figures.qemuDowntimeMs = move.info.downtimeMs ?? null;
      figures.downtimeMs =
        move.resumedAt !== null && move.stoppedAt !== null
          ? Math.round((move.resumedAt - move.stoppedAt) * 10) / 10
          : figures.qemuDowntimeMs;
      figures.qemuRamBytes = move.info.ram?.transferred ?? null;
      figures.diskBytes = move.disks?.bytes ?? null;
      figures.diskReadyMs = move.disks?.readyMs ?? null;
    } catch (err) {
      for (const c of counters) await c.stop();
      // QEMU resumes a source whose migration failed by itself; the destination's copy must not run.
      await destination?.kill().catch(() => {});
      this.forgetDir(dstDir);
      return failed(figures, err, t0);
    }
    await source.stop();
    this.pids.delete(source.pid);
    await this.finishCount(counters, figures);
    figures.wireBytes = figures.socketBytes;
    this.leave(dstDir, { carrier: 'qemu', qemu: destination }, figures);
    return figures;
  }

  /** Stops the guest and removes everything it left. */
  async destroy(): Promise<void> {
    const h = this.holder;
    if (h.carrier === 'ferry') await h.client.destroy().catch(() => h.client.close());
    else await h.qemu.stop().catch(() => {});
    this.close();
  }

  /** Kills every process this guest's moves started (by pid) and removes its directories: for a signal or a failure. */
  close(): void {
    for (const pid of this.pids) kill(pid);
    this.pids.clear();
    if (this.holder.carrier === 'ferry') this.holder.client.close();
    rmSync(this.root, { recursive: true, force: true });
  }

  /** Held by a ferry guest process: a QEMU held here is handed to a new one, which adopts it. */
  private async asFerry(): Promise<GuestClient> {
    if (this.holder.carrier === 'ferry') return this.holder.client;
    const { qmp } = this.holder.qemu;
    // ferry never uses QEMU's own TLS, and does not expect a QEMU that was told to.
    await qmp.execute('migrate-set-parameters', { 'tls-creds': '', 'tls-hostname': '' });
    await qmp.close();
    const client = await startGuest(this.dir, this.config);
    this.pids.add(client.pid);
    this.holder = { carrier: 'ferry', client };
    return client;
  }

  /** Held here over QMP: the guest process that holds it is killed, its QEMU running on, and adopted. */
  private async asQemu(): Promise<Qemu> {
    if (this.holder.carrier === 'qemu') return this.holder.qemu;
    const { client } = this.holder;
    client.close();
    kill(client.pid);
    await this.waitGone(client.pid);
    this.pids.delete(client.pid);
    const qemu = await Qemu.adopt(this.config, this.dir);
    if (!qemu) throw new FerryError('ERR_FERRY_INTERNAL', `the guest's QEMU in ${this.dir} did not outlive its guest process`);
    this.holder = { carrier: 'qemu', qemu };
    return qemu;
  }

  private async setState(state: GuestState): Promise<void> {
    const h = this.holder;
    if (h.carrier === 'ferry') {
      const running = (await h.client.status()).state === 'running';
      if (state === 'running' && !running) await h.client.resume();
      if (state === 'paused' && running) await h.client.pause();
    } else {
      const running = (await h.qemu.qmp.queryStatus()).running;
      if (state === 'running' && !running) await h.qemu.qmp.cont();
      if (state === 'paused' && running) await h.qemu.qmp.stop();
    }
    await sleep(this.settleMs);
  }

  private nextDir(): string {
    return path.join(this.root, `g${++this.generation}`);
  }

  private async countSockets(port: number, figures: MoveFigures): Promise<SocketBytes | null> {
    const why = SocketBytes.unavailable();
    if (why) {
      figures.notes.push(why);
      return null;
    }
    return SocketBytes.start(port).catch((err: Error) => {
      figures.notes.push(`socket bytes not counted: ${err.message}`);
      return null;
    });
  }

  /** The counts of the move's ports, summed (null when any failed). */
  private async finishCount(counters: SocketBytes[], figures: MoveFigures): Promise<void> {
    if (!counters.length) return;
    let sum: number | null = 0;
    for (const counter of counters) {
      const c = await counter.stop();
      sum = sum === null || c.bytes === null ? null : sum + c.bytes;
      if (c.error) figures.notes.push(`socket bytes not counted: ${c.error}`);
    }
    figures.socketBytes = sum;
  }

  private readCpu(figures: MoveFigures, meter: CpuMeter, source: number[], destination: number[]): void {
    const s = meter.since(source);
    const d = meter.since(destination);
    figures.cpuSeconds = { source: s?.seconds ?? null, destination: d?.seconds ?? null };
    figures.vcpuSeconds = { source: s?.matchedSeconds ?? null, destination: d?.matchedSeconds ?? null };
  }

  /** The guest now lives in `dir`: the copy left behind is checked for damage reports and removed. */
  private leave(dir: string, holder: Holder, figures: MoveFigures): void {
    figures.damage = damageIn(this.dir);
    rmSync(this.dir, { recursive: true, force: true });
    // What ferry's source left of its images beside its directory after the commit (disks.ts).
    for (const name of readdirSync(this.root))
      if (name.startsWith(`${path.basename(this.dir)}.disks-`)) rmSync(path.join(this.root, name), { recursive: true, force: true });
    this.dir = dir;
    this.holder = holder;
  }

  /** A move that did not happen: its destination directory goes (its processes are gone or killed). */
  private forgetDir(dir: string): void {
    rmSync(dir, { recursive: true, force: true });
  }

  private async waitGone(pid: number): Promise<void> {
    const deadline = performance.now() + 15_000;
    while (!gone(pid)) {
      if (performance.now() > deadline) throw new FerryError('ERR_FERRY_TIMEOUT', `process ${pid} did not end within 15 s`);
      await sleep(20);
    }
  }
}

function emptyFigures(): MoveFigures {
  return {
    ok: false,
    error: null,
    totalMs: null,
    downtimeMs: null,
    qemuTotalMs: null,
    qemuDowntimeMs: null,
    wireBytes: null,
    socketBytes: null,
    qemuRamBytes: null,
    diskBytes: null,
    diskReadyMs: null,
    cpuSeconds: { source: null, destination: null },
    vcpuSeconds: { source: null, destination: null },
    wallMs: 0,
    damage: [],
    notes: [],
  };
}

function failed(figures: MoveFigures, err: unknown, t0: number): MoveFigures {
  const e = toFerryError(err);
  figures.error = `${e.code}: ${e.message}`;
  figures.wallMs = Math.round(performance.now() - t0);
  return figures;
}
