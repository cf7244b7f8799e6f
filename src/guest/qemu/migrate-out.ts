/**
 * The source side of a QEMU guest's migration. QEMU does what it does well — dirty tracking, zero
 * pages, device state, its own switch-over decision — and ferry carries its connections, sealed,
 * through the channel, and keeps the hand-off rule (docs/migration.md, "QEMU guests"):
 *
 *   BEGIN + boot files → READY → `migrate` to a unix socket here; each connection QEMU opens
 *   becomes a stream, in accept order → QEMU stops at pre-switchover → `migrate-continue` →
 *   completed (with return-path: only once the destination loaded everything; QEMU is paused,
 *   postmigrate) → SOURCE_DONE → COMMITTED: committed, the agent lets this copy go.
 *
 * Before `migrate-continue` every failure or cancel is `migrate_cancel`, and QEMU resumes the
 * guest itself. After it and before completed, a failure also ends with QEMU resuming it, and the
 * destination cannot commit (it commits only on SOURCE_DONE). After completed the guest stays
 * paused until the destination's answer: COMMITTED, or ABORT (sent once the destination's QEMU is
 * gone: then `cont` here); without an answer it is in doubt, and stays paused.
 */
import { createServer, type Server } from 'node:net';
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { FerryError, toFerryError } from '../../errors.js';
import { Deferred, sleep, withTimeout } from '../../common/async.js';
import type { Channel } from '../../channel/types.js';
import { StreamMux } from '../../channel/streams.js';
import { Outcome } from '../../migration/outcome.js';
import {
  DEFAULT_COMMIT_TIMEOUT_MS,
  DEFAULT_MAX_DOWNTIME_MS,
  DEFAULT_TIMEOUT_MS,
  type HypervisorFigures,
  type MigrationEvent,
  type MigrationResult,
  type OutgoingSpec,
} from '../../migration/types.js';
import type { QemuConfig } from '../types.js';
import { BOOT_DIR } from './argv.js';
import { BOOT_FILE_NAMES } from './config.js';
import type { Qemu } from './hypervisor.js';
import {
  checkAbort,
  checkCommitted,
  checkReady,
  decode,
  encode,
  FILE_CHUNK_BYTES,
  QEMU_ENGINE_VERSION,
  QMSG,
  type SourceDone,
} from './messages.js';
import { QemuProgress, StatusWatch } from './progress.js';
import { canDigest, ramDigest } from './ram-digest.js';
import { SourceDisks } from './source-disks.js';
import { formatLimit } from '../../common/units.js';

/** The socket QEMU's outgoing migration connects to, in the guest directory (0700). */
export const MIGRATE_OUT_SOCKET = 'migrate-out.sock';
/** Each QEMU connection's credit window in the channel: enough for line rate at a long round trip. */
export const STREAM_WINDOW_BYTES = 16 << 20;
/** QEMU's max-bandwidth when the operator set no cap: far above any link here, never QEMU's 128 MiB/s default. */
export const UNCAPPED_BANDWIDTH = 100 * 2 ** 30;
const POLL_MS = 200;
const READY_TIMEOUT_MS = 2 * 60_000;

export interface QemuSourceContext {
  config: QemuConfig;
  dir: string;
  qemu: Qemu;
  spec: Omit<OutgoingSpec, 'key' | 'nonce'>;
  /** The operator's cancel (honoured until `migrate-continue`). */
  signal: AbortSignal;
  emit(event: MigrationEvent): void;
}

export async function migrateQemuOut(channel: Channel, ctx: QemuSourceContext): Promise<MigrationResult> {
  return new QemuSource(channel, ctx).run();
}

class QemuSource {
  private readonly outcome: Outcome;
  private readonly started = performance.now();
  private readonly cpu = process.cpuUsage();
  private readonly mux: StreamMux;
  private readonly progress: QemuProgress;
  private readonly ready = new Deferred<void>();
  private readonly answer = new Deferred<'committed' | 'aborted'>();
  private peerError: FerryError | null = null;
  private server: Server | null = null;
  /** From `migrate-continue` on, the hand-off is under way: no cancel, and QEMU's own failure rules. */
  private continued = false;
  private completed = false;
  private verifyMs: number | null = null;
  /** When QEMU stopped the guest for the switch-over (its STOP event arrived), on the monotonic clock. */
  private stoppedAt: number | null = null;
  /** The guest ran when the migration began (an operator's pause outlives a failed move). */
  private wasRunning = true;
  private readonly disks: SourceDisks;

  constructor(
    private readonly channel: Channel,
    private readonly ctx: QemuSourceContext,
  ) {
    this.outcome = new Outcome('source', ctx.spec.migrationId);
    this.mux = new StreamMux(channel, { windowBytes: STREAM_WINDOW_BYTES });
    this.progress = new QemuProgress(this.started);
    this.disks = new SourceDisks(ctx.qemu.qmp, ctx.dir, ctx.config, this.mux, channel);
  }

  private get qmp() {
    return this.ctx.qemu.qmp;
  }

  async run(): Promise<MigrationResult> {
    void this.receive();
    try {
      await this.begin();
      await this.precopy();
      await this.handOff();
    } catch (err) {
      await this.fail(toFerryError(err));
    } finally {
      this.server?.close();
      await fs.rm(path.join(this.ctx.dir, MIGRATE_OUT_SOCKET), { force: true });
    }
    return this.result();
  }

  /** Every message of the destination, for as long as the channel lasts. */
  private async receive(): Promise<void> {
    try {
      for (;;) {
        const m = await this.channel.receive();
        if (m === null) break;
        if (this.mux.handle(m) !== false) continue;
        if (m.type === QMSG.READY) {
          decode(m.type, m.payload, checkReady);
          this.ready.resolve();
        } else if (m.type === QMSG.COMMITTED) {
          this.outcome.destinationDigest = decode(m.type, m.payload, checkCommitted).digest ?? null;
          this.answer.resolve('committed');
        } else if (m.type === QMSG.ABORT) {
          const a = decode(m.type, m.payload, checkAbort);
          this.peerError = new FerryError('ERR_FERRY_ABORTED', `the destination gave up: ${a.message} (${a.code})`);
          this.ready.reject(this.peerError);
          this.answer.resolve('aborted');
        } else {
          throw new FerryError('ERR_FERRY_FRAME', `the destination sent message type ${m.type}, which the qemu engine does not take`);
        }
      }
      throw new FerryError('ERR_FERRY_NETWORK', 'the destination ended the channel before the hand-off');
    } catch (err) {
      const e = toFerryError(err, 'ERR_FERRY_NETWORK');
      this.mux.abort(e);
      this.ready.reject(e);
      this.answer.reject(e);
    }
  }

  private async begin(): Promise<void> {
    const { config, spec } = this.ctx;
    this.wasRunning = (await this.qmp.queryStatus()).running;
    const multifd = spec.streams > 1 ? spec.streams : 0;
    await this.channel.send(
      QMSG.BEGIN,
      encode({
        engine: 'qemu',
        version: QEMU_ENGINE_VERSION,
        config,
        windowBytes: STREAM_WINDOW_BYTES,
        multifdChannels: multifd,
        verify: spec.verify === true,
      }),
    );
    // The files the guest boots from go with it: the destination has no copy of its own.
    for (const [index, name] of BOOT_FILE_NAMES.entries()) {
      if (!config[name]) continue;
      const bytes = readFileSync(path.join(this.ctx.dir, BOOT_DIR, name));
      for (let at = 0; at < bytes.length; at += FILE_CHUNK_BYTES) {
        await this.channel.send(QMSG.FILE, [Buffer.from([index]), bytes.subarray(at, at + FILE_CHUNK_BYTES)]);
      }
    }
    await this.untilCancelled(
      withTimeout(
        this.ready.promise,
        READY_TIMEOUT_MS,
        () => new FerryError('ERR_FERRY_TIMEOUT', `the destination did not start its QEMU within ${READY_TIMEOUT_MS / 1000} s`),
      ),
    );
    await this.qmp.migrateSetCapabilities({
      events: true,
      'return-path': true,
      'pause-before-switchover': true,
      multifd: multifd > 0,
      'auto-converge': spec.autoConverge !== false,
    });
    await this.qmp.migrateSetParameters({
      maxBandwidth: spec.maxBytesPerSecond ?? UNCAPPED_BANDWIDTH,
      downtimeLimitMs: spec.maxDowntimeMs ?? DEFAULT_MAX_DOWNTIME_MS,
      ...(multifd > 0 ? { multifdChannels: multifd } : {}),
    });
    // Every disk mirror in sync before RAM starts.
    await this.disks.mirror(
      () => this.mux.error ?? this.channel.error ?? this.peerError ?? this.cancelReason(this.deadline),
      this.ctx.emit,
    );
    this.server = await this.listen();
  }

  private get deadline(): number {
    return this.started + (this.ctx.spec.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  }

  /** The unix socket QEMU connects to: each connection, in accept order, one stream to the destination. */
  private async listen(): Promise<Server> {
    const file = path.join(this.ctx.dir, MIGRATE_OUT_SOCKET);
    await fs.rm(file, { force: true });
    let next = 0;
    const server = createServer({ allowHalfOpen: true }, (socket) => {
      try {
        this.mux.open(next++, socket);
      } catch {
        socket.destroy();
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => resolve());
    });
    await fs.chmod(file, 0o600);
    return server;
  }

  /**
   * From `migrate` to QEMU's completed: progress reported, the deadline and the cancel honoured
   * until `migrate-continue`. QEMU's MIGRATION events drive the steps, so the guest waits at
   * pre-switchover no longer than it takes to answer; query-migrate gives the figures.
   */
  private async precopy(): Promise<void> {
    const { spec, dir } = this.ctx;
    const status = new StatusWatch();
    const unsubscribe = this.qmp.onEvent((e) => {
      if (e.event === 'STOP' && this.stoppedAt === null) this.stoppedAt = performance.now();
      if (e.event === 'MIGRATION' && typeof e.data.status === 'string') status.set(e.data.status);
    });
    try {
      await this.qmp.migrate(`unix:${path.join(dir, MIGRATE_OUT_SOCKET)}`);
      const deadline = this.deadline;
      let passReported = false;
      for (;;) {
        // The destination's word first: its ABORT says why; the channel it closes after it, only that it closed.
        const stop = this.peerError ?? this.mux.error ?? this.channel.error ?? (this.continued ? null : this.cancelReason(deadline));
        if (stop) throw stop;
        const current = status.value;
        if (current === 'pre-switchover' && !this.continued) {
          this.continued = true;
          // Paused from here: a lost channel is waited out only as long as the pause may last, so
          // the guest is resumed or declared in doubt in that time, not after minutes of reconnecting.
          this.channel.limitReconnectWait?.(spec.maxDowntimeMs ?? DEFAULT_MAX_DOWNTIME_MS);
          // A move faster than one poll reached here unreported: its figures first, as a pass.
          if (!passReported) {
            const event = this.progress.update(await this.qmp.queryMigrate(), performance.now(), this.channel.stats);
            if (event) this.ctx.emit(event);
          }
          const info = this.progress.last;
          this.ctx.emit({ type: 'switch-over', bytesLeft: info?.ram?.remaining ?? 0, estimatedDowntimeMs: info?.expectedDowntimeMs ?? 0 });
          await this.disks.finish(spec.verify === true);
          await this.qmp.migrateContinue('pre-switchover');
        }
        const info = await this.qmp.queryMigrate();
        const event = this.progress.update(info, performance.now(), this.channel.stats);
        if (info.status === 'completed') break;
        if (info.status === 'failed' || info.status === 'cancelled') {
          throw new FerryError(
            'ERR_FERRY_ABORTED',
            `QEMU's migration ${info.status}${info.errorDesc ? `: ${info.errorDesc}` : ''}; the guest runs here`,
          );
        }
        if (event && !this.continued && info.status !== 'pre-switchover') {
          this.ctx.emit(event);
          passReported = true;
        }
        // QEMU waits at pre-switchover with the guest paused: act on it now, not after its event or the poll.
        if (!this.continued && info.status === 'pre-switchover') status.set(info.status);
        await status.changed(POLL_MS);
      }
    } finally {
      unsubscribe();
    }
    this.completed = true;
    this.progress.finish(performance.now());
  }

  /** QEMU completed (the guest paused here): tell the destination, and wait for its decision. */
  private async handOff(): Promise<void> {
    const info = this.progress.last;
    const verifyStart = performance.now();
    const digest =
      this.ctx.spec.verify && canDigest(this.ctx.config.memoryBytes)
        ? await ramDigest(this.qmp, this.ctx.dir, this.ctx.config.memoryBytes)
        : null;
    if (this.ctx.spec.verify) this.verifyMs = Math.round(performance.now() - verifyStart);
    this.outcome.sourceDigest = digest;
    const done: SourceDone = { totalMs: info?.totalTimeMs ?? 0, downtimeMs: info?.downtimeMs ?? null, digest };
    await this.channel.send(QMSG.SOURCE_DONE, encode(done));
    const limit = this.ctx.spec.commitTimeoutMs ?? DEFAULT_COMMIT_TIMEOUT_MS;
    const answer = await withTimeout(
      this.answer.promise,
      limit,
      () => new FerryError('ERR_FERRY_TIMEOUT', `no answer from the destination within ${limit} ms`),
    );
    if (answer === 'committed') {
      this.outcome.outcome = 'committed';
      // The guest's whole pause: from QEMU's stop here to the destination's word that it runs there.
      this.outcome.downtimeMs =
        this.stoppedAt !== null ? Math.round(Math.max(0, performance.now() - this.stoppedAt)) : (info?.downtimeMs ?? null);
      await this.disks.leave(this.ctx.spec.migrationId, this.ctx.spec.removeSourceDisks === true);
      this.ctx.emit({ type: 'committed', downtimeMs: this.outcome.downtimeMs });
      void withTimeout(this.channel.end(), 5000, () => new Error('timeout')).catch(() => this.channel.close());
      return;
    }
    // The destination's QEMU is gone (it says so only after): the guest runs here again.
    throw this.peerError ?? new FerryError('ERR_FERRY_ABORTED', 'the destination did not commit');
  }

  private cancelReason(deadline: number): FerryError | null {
    if (this.ctx.signal.aborted)
      return toFerryError(this.ctx.signal.reason ?? new FerryError('ERR_FERRY_ABORTED', 'cancelled'), 'ERR_FERRY_ABORTED');
    if (performance.now() > deadline)
      return new FerryError(
        'ERR_FERRY_TIMEOUT',
        `the migration did not converge within ${formatLimit(this.ctx.spec.timeoutMs ?? DEFAULT_TIMEOUT_MS)} (--timeout); the guest runs here`,
      );
    return null;
  }

  /** `promise`, or the operator's cancel, whichever comes first. */
  private untilCancelled<T>(promise: Promise<T>): Promise<T> {
    const { signal } = this.ctx;
    if (signal.aborted) return Promise.reject(toFerryError(signal.reason, 'ERR_FERRY_ABORTED'));
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(toFerryError(signal.reason, 'ERR_FERRY_ABORTED'));
      signal.addEventListener('abort', onAbort, { once: true });
      promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  /** Ends a migration that did not commit, leaving the guest running here, or paused in doubt. */
  private async fail(cause: FerryError): Promise<void> {
    // Before completed the destination cannot commit: a QEMU that died here took the guest with it,
    // whatever else the failure looked like (the destination's QEMU exits when its stream breaks).
    const err =
      !this.completed && !this.ctx.qemu.alive
        ? new FerryError(
            'ERR_FERRY_QEMU',
            `guest ${this.ctx.config.name}'s QEMU exited on this host during the migration (crashed or killed); no copy of it runs at the destination`,
          )
        : cause;
    this.outcome.error = { code: err.code, message: err.message };
    if (this.completed && !this.peerError) {
      // QEMU completed and the destination may have committed: only its answer may resume the guest.
      this.outcome.outcome = 'in-doubt';
      this.ctx.emit({ type: 'in-doubt', code: err.code, message: err.message });
      this.mux.abort(err);
      this.channel.close();
      return;
    }
    this.outcome.outcome = 'aborted';
    this.mux.abort(err);
    if (!this.channel.error) {
      await withTimeout(
        this.channel.send(QMSG.ABORT, encode({ code: err.code, message: err.message })),
        2000,
        () => new Error('timeout'),
      ).catch(() => {});
    }
    this.channel.close();
    await this.disks.abandon();
    await this.resumeHere();
    this.ctx.emit({ type: 'aborted', code: err.code, message: err.message });
  }

  /** Makes sure the guest runs here: QEMU's own migration cancelled (it resumes by itself), or `cont` after completed. */
  private async resumeHere(): Promise<void> {
    const info = await this.qmp.queryMigrate().catch(() => null);
    if (info && ['setup', 'active', 'pre-switchover', 'device', 'wait-unplug'].includes(info.status)) {
      await this.qmp.migrateCancel().catch(() => {});
      for (let i = 0; i < 100; i++) {
        const s = await this.qmp.queryMigrate().catch(() => null);
        if (!s || ['cancelled', 'failed', 'completed'].includes(s.status)) break;
        await sleep(50);
      }
    }
    const status = await this.qmp.queryStatus().catch(() => null);
    if (this.wasRunning && status && !status.running && ['postmigrate', 'finish-migrate', 'paused'].includes(status.status))
      await this.qmp.cont().catch(() => {});
  }

  private result(): MigrationResult {
    const stats = this.channel.stats;
    const cpu = process.cpuUsage(this.cpu);
    const info = this.progress.last;
    const v = this.qmp.version;
    const hypervisor: HypervisorFigures | null = info?.ram
      ? {
          kind: 'qemu',
          version: `${v.major}.${v.minor}.${v.micro}`,
          totalMs: info.totalTimeMs ?? 0,
          downtimeMs: info.downtimeMs ?? null,
          setupMs: info.setupTimeMs ?? null,
          ramBytes: info.ram.transferred,
          zeroPages: info.ram.duplicate,
          dirtySyncCount: info.ram.dirtySyncCount,
          verifyMs: this.verifyMs,
        }
      : null;
    return {
      ...this.outcome.result({
        passes: this.progress.passes,
        totalMs: performance.now() - this.started,
        bytesSent: stats.bytesSent,
        bytesReceived: stats.bytesReceived,
        zeroPagesSkipped: info?.ram?.duplicate ?? 0,
        throttlePercent: info?.cpuThrottlePercentage ?? 0,
        cpu,
        channel: this.channel,
      }),
      hypervisor,
      disks: this.disks.figures(),
    };
  }
}
