/**
 * The moves `ferry bench paper` measures: one synthetic guest moved back and forth between guest
 * processes on this host (this process playing both agents, as `ferry bench engine` does), so
 * that encrypted and plain moves of one experiment meet the same guest, and what each move cost:
 * time, switch-over, bytes, CPU cores on each side, and the guest's own operations a second,
 * sampled once a second before, during and after the move.
 */
import path from 'node:path';
import { FerryError } from '../errors.js';
import { startGuest, type GuestClient } from '../guest/index.js';
import type { SyntheticConfig } from '../guest/types.js';
import type { MigrationResult } from '../migration/types.js';
import { sleep } from '../common/async.js';
import { migrateLocally } from './local-migration.js';
import { wanRoute } from './wan-emulator.js';

export type Mode = 'encrypted' | 'plain';

const MAX_DOWNTIME_MS = 500;
const STREAMS = 2;
const SETUP_LIMIT_MS = 10 * 60_000;

/** One sample of the guest's operations a second, at `t` ms from the start of the move. */
export interface OpsSample {
  t: number;
  ops: number;
}

export interface MoveOptions {
  /** The link's cap, in bytes a second (the channel's pacer, or the WAN emulator's with `rttMs`). */
  maxBytesPerSecond?: number;
  /** A long link: the data goes through the user-space WAN emulator with this round trip. */
  rttMs?: number;
  verify?: boolean;
  /** Sample the guest's operations a second this long before and after the move (ms); 0: not at all. */
  sampleAroundMs?: number;
}

export interface Move {
  mode: Mode;
  ok: boolean;
  error: string | null;
  totalMs: number;
  switchoverMs: number | null;
  /** Payload bytes the source sent, and bytes on its sockets (headers and tags included). */
  bytesSent: number;
  wireBytes: number | null;
  /** Payload bits a second over the move, in Gbit/s. */
  throughputGbps: number;
  passes: number;
  /** CPU cores each side's guest process used over the move (CPU time / wall time). */
  sourceCores: number;
  destinationCores: number | null;
  /** --verify was asked and the move committed: the digests of both sides were equal (a mismatch fails the move). */
  verified: boolean;
  /** The guest's operations a second: samples from before the move to after it, t = 0 at its start. */
  ops: OpsSample[];
  opsBefore: number | null;
  opsDuring: number | null;
  opsAfter: number | null;
}

const mean = (xs: number[]): number | null => (xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length);

/** Samples `read()` once a second until stopped; each sample is timed from `origin`. */
class Sampler {
  readonly samples: OpsSample[] = [];
  private stopped = false;
  private readonly done: Promise<void>;

  constructor(
    private read: () => Promise<number | null>,
    private readonly origin: number,
  ) {
    this.done = this.loop();
  }

  /** From now on the samples come from another guest process (the destination, after the move). */
  follow(read: () => Promise<number | null>): void {
    this.read = read;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const ops = await this.read().catch(() => null);
      if (ops !== null && !this.stopped) this.samples.push({ t: Math.round(performance.now() - this.origin), ops });
      await sleep(1000);
    }
  }

  async stop(): Promise<OpsSample[]> {
    this.stopped = true;
    await this.done;
    return this.samples;
  }
}

/** A guest that the experiments move back and forth; its directories live under `root`. */
export class PaperGuest {
  private moves = 0;

  private constructor(
    private readonly root: string,
    readonly config: SyntheticConfig,
    private current: GuestClient,
  ) {}

  /** Starts the guest and waits until its workload's setup (filling memory, loading the store) is done. */
  static async start(root: string, config: SyntheticConfig): Promise<PaperGuest> {
    const client = await startGuest(path.join(root, `${config.name}-0`), config);
    const deadline = performance.now() + SETUP_LIMIT_MS;
    while (!(await client.status()).workloadReady) {
      if (performance.now() > deadline) {
        await client.destroy().catch(() => {});
        throw new FerryError('ERR_FERRY_TIMEOUT', `guest ${config.name}'s workload setup took over ${SETUP_LIMIT_MS / 60_000} minutes`);
      }
      await sleep(100);
    }
    return new PaperGuest(root, config, client);
  }

  /** Waits until the guest reports a rate two samples running, at most `limitMs`. */
  async steady(limitMs: number): Promise<void> {
    const deadline = performance.now() + Math.max(limitMs, 2500);
    let seen = 0;
    while (seen < 2 && performance.now() < deadline) {
      seen = (await this.opsPerSecond()) > 0 ? seen + 1 : 0;
      await sleep(1000);
    }
  }

  /** The guest's operations a second now. */
  async opsPerSecond(): Promise<number> {
    return (await this.current.status()).opsPerSecond;
  }

  /** Moves the guest once; on success it runs in the new guest process afterwards, else where it was. */
  async move(mode: Mode, o: MoveOptions = {}): Promise<Move> {
    const around = o.sampleAroundMs ?? 0;
    const origin = performance.now() + around;
    const source = this.current;
    const sampler = around > 0 ? new Sampler(async () => (await source.status()).opsPerSecond, origin) : null;
    if (around > 0) await sleep(around);
    const wan =
      o.rttMs === undefined
        ? null
        : wanRoute({ delayMs: o.rttMs / 2, ...(o.maxBytesPerSecond ? { bytesPerSecond: o.maxBytesPerSecond } : {}) });
    const dir = path.join(this.root, `${this.config.name}-${++this.moves}`);
    let m: Awaited<ReturnType<typeof migrateLocally>>;
    try {
      m = await migrateLocally(source, dir, this.config, {
        mode,
        streams: STREAMS,
        maxDowntimeMs: MAX_DOWNTIME_MS,
        verify: o.verify ?? false,
        ...(wan ? { route: wan.route } : o.maxBytesPerSecond ? { maxBytesPerSecond: o.maxBytesPerSecond } : {}),
      });
    } catch (err) {
      await sampler?.stop();
      throw err;
    } finally {
      await wan?.close();
    }
    const result = m.source.result;
    const ok = m.source.phase === 'committed' && result?.outcome === 'committed';
    const endedAt = performance.now() - origin;
    if (ok) {
      sampler?.follow(async () => (await m.incoming.client.status()).opsPerSecond);
      await source.finish().catch(() => {});
      this.current = m.incoming.client;
    } else {
      await m.incoming.client.destroy().catch(() => {});
    }
    if (around > 0) await sleep(around);
    const ops = (await sampler?.stop()) ?? [];
    const destination = ok ? await destinationResult(m.incoming.client, m.source.migrationId) : null;
    return figures(mode, result ?? null, ok, destination, ops, endedAt, o.verify ?? false);
  }

  async close(): Promise<void> {
    await this.current.destroy().catch(() => {});
  }
}

/** The destination's result comes a moment after the commit, once its farewells are done. */
async function destinationResult(client: GuestClient, migrationId: string): Promise<MigrationResult | null> {
  const deadline = performance.now() + 10_000;
  for (;;) {
    const m = await client.migration().catch(() => null);
    if (m?.migrationId === migrationId && m.result) return m.result;
    if (performance.now() > deadline) return null;
    await sleep(100);
  }
}

function figures(
  mode: Mode,
  r: MigrationResult | null,
  ok: boolean,
  destination: MigrationResult | null,
  ops: OpsSample[],
  endedAt: number,
  verify: boolean,
): Move {
  const totalMs = r?.totalMs ?? 0;
  const cores = (x: MigrationResult | null) => (x && totalMs > 0 ? (x.cpu.userMs + x.cpu.systemMs) / totalMs : null);
  return {
    mode,
    ok,
    error: r?.error ? `${r.error.code}: ${r.error.message}` : ok ? null : 'the migration did not commit',
    totalMs,
    switchoverMs: r?.downtimeMs ?? null,
    bytesSent: r?.bytesSent ?? 0,
    wireBytes: r?.wireBytes?.sent ?? null,
    throughputGbps: r && totalMs > 0 ? (r.bytesSent * 8) / (totalMs / 1000) / 1e9 : 0,
    passes: r?.passes.length ?? 0,
    sourceCores: cores(r) ?? 0,
    destinationCores: cores(destination),
    verified: verify && ok,
    ops,
    opsBefore: mean(ops.filter((s) => s.t < 0).map((s) => s.ops)),
    opsDuring: mean(ops.filter((s) => s.t >= 0 && s.t <= endedAt).map((s) => s.ops)),
    opsAfter: mean(ops.filter((s) => s.t > endedAt).map((s) => s.ops)),
  };
}
