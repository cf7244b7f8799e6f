/**
 * The source side of a migration: pre-copy passes, convergence, switch-over, and the wait for the
 * destination's decision. docs/migration.md has the exchange and the safety argument.
 */
import type { Channel } from '../channel/types.js';
import { zeroPages } from '../crypto/index.js';
import { FerryError, toFerryError } from '../errors.js';
import { Convergence } from './convergence.js';
import {
  DataBuilder, ENGINE_VERSION, MSG, SPACE_DISK, SPACE_MEMORY, encodeJson, type Begin, type Complete, type SpaceCounts,
} from './messages.js';
import { Outcome } from './outcome.js';
import { PeerReplies } from './peer.js';
import {
  DEFAULT_COMMIT_TIMEOUT_MS, DEFAULT_MAX_DOWNTIME_MS, DEFAULT_TIMEOUT_MS,
  type MigrationEvent, type MigrationResult, type PassReport, type SourceGuest,
} from './types.js';

export interface SourceOptions {
  migrationId: string;
  maxDowntimeMs?: number;
  timeoutMs?: number;
  autoConverge?: boolean;
  verify?: boolean;
  commitTimeoutMs?: number;
  maxBytesPerSecond?: number;
  /**
   * Cancels the migration when it aborts, before switch-over only: the channel fails at once (the
   * destination hears an authenticated ABORT), the guest runs on here, un-throttled. From the
   * switch-over decision on the hand-off is the destination's to decide, and the signal is ignored
   * (docs/migration.md, "Cancelling").
   */
  signal?: AbortSignal;
}

/** Pages or blocks scanned and sent per step: 1 MiB, one DATA message's worth. */
const CHUNK_BYTES = 1 << 20;
/** DATA messages queued on the channel at once. */
const MAX_INFLIGHT = 8;

function runsOf(indexes: Uint32Array): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  let i = 0;
  while (i < indexes.length) {
    const first = indexes[i]!;
    let n = 1;
    while (i + n < indexes.length && indexes[i + n] === first + n) n++;
    runs.push([first, n]);
    i += n;
  }
  return runs;
}

class SourceMigration {
  private builder = new DataBuilder();
  /** DATA messages handed to the channel and not yet taken, with the builders they live in. */
  private readonly inflight: Array<{ taken: Promise<void>; builder: DataBuilder }> = [];
  private readonly spare: DataBuilder[] = [];
  private readonly scratch = Buffer.allocUnsafe(CHUNK_BYTES);
  private readonly memory: SpaceCounts = { dataUnits: 0, zeroUnits: 0, dataBytes: 0 };
  private readonly disk: SpaceCounts = { dataUnits: 0, zeroUnits: 0, dataBytes: 0 };
  private readonly passes: PassReport[] = [];
  private readonly conv: Convergence;
  private readonly started = performance.now();
  private readonly cpuStart = process.cpuUsage();
  private readonly originalThrottle: number;
  private bytesSent = 0;
  private dataMessages = 0;
  private pass = 0;
  private passStats: PassReport = this.newPass();
  private readonly replies: PeerReplies;
  /** Set, in the same tick as the 'switch-over' event, once the engine decided to pause: no cancel from then on. */
  private switchingOver = false;
  /** The operator's cancel, once accepted. */
  private cancelled: FerryError | null = null;

  constructor(
    private readonly channel: Channel,
    private readonly guest: SourceGuest,
    private readonly options: Required<Omit<SourceOptions, 'maxBytesPerSecond' | 'signal'>> & { maxBytesPerSecond?: number },
    private readonly onEvent: (event: MigrationEvent) => void,
    private readonly signal?: AbortSignal,
  ) {
    this.conv = new Convergence(options.maxDowntimeMs, options.autoConverge, options.maxBytesPerSecond);
    this.originalThrottle = guest.throttlePercent;
    this.replies = new PeerReplies(channel);
  }

  private newPass(): PassReport {
    return { pass: this.pass, pages: 0, zeroPages: 0, blocks: 0, zeroBlocks: 0, bytes: 0, durationMs: 0 };
  }

  private elapsed(): number {
    return performance.now() - this.started;
  }

  private async send(type: number, payload: Uint8Array): Promise<void> {
    this.replies.throwIfPeerAborted();
    await this.channel.send(type, payload);
    this.bytesSent += payload.length;
    this.passStats.bytes += payload.length;
  }

  /**
   * Hands the message being built to the channel without waiting for it to be taken, so several
   * are queued at once and the channel can seal them in batches; at most MAX_INFLIGHT.
   */
  private async flush(): Promise<void> {
    if (this.builder.empty) return;
    this.replies.throwIfPeerAborted();
    this.dataMessages++;
    const length = this.builder.bytes;
    const payload = this.builder.take();
    const taken = this.channel.send(MSG.DATA, payload);
    taken.catch(() => {});
    this.inflight.push({ taken, builder: this.builder });
    this.bytesSent += length;
    this.passStats.bytes += length;
    this.builder = this.spare.pop() ?? new DataBuilder();
    while (this.inflight.length >= MAX_INFLIGHT) await this.settleOne();
  }

  private async settleOne(): Promise<void> {
    const first = this.inflight.shift()!;
    await first.taken;
    this.spare.push(first.builder);
  }

  private async drain(): Promise<void> {
    while (this.inflight.length > 0) await this.settleOne();
  }

  /** Room for `bytes` more data (and one run) in the message being built, flushing first if not. */
  private async room(bytes: number, space: number): Promise<void> {
    if (!this.builder.empty && (this.builder.space !== space || !this.builder.fits(bytes))) await this.flush();
    this.builder.space = space;
    this.builder.pass = this.pass;
  }

  private lastProgress = performance.now();

  /** A 'pass' event at most once a second during a long pass, so a big first pass shows progress. */
  private progress(): void {
    const now = performance.now();
    if (now - this.lastProgress < 1000) return;
    this.lastProgress = now;
    const p = this.passStats;
    const left = this.passPlanned - (p.pages + p.zeroPages) * this.guest.pageSize - (p.blocks + p.zeroBlocks) * this.guest.blockSize;
    if (left <= 0) return;
    const rate = (p.bytes * 1000) / Math.max(1, now - this.passStarted);
    this.onEvent({
      type: 'pass', pass: this.pass, bytesSent: this.bytesSent, bytesLeft: left,
      throughput: rate, dirtyRate: this.conv.dirtyRate, zeroPagesSkipped: this.zeroSkipped(), throttlePercent: this.guest.throttlePercent, elapsedMs: this.elapsed(),
    });
  }

  /**
   * The operator's cancel: accepted only before switch-over. Failing the channel ends every wait
   * of the engine (sends, acknowledgements) at once and tells the destination, which cannot have
   * committed: it never got COMPLETE.
   */
  private cancel(reason: unknown): boolean {
    if (this.switchingOver) return false;
    if (this.cancelled) return true;
    this.cancelled = reason instanceof FerryError ? reason : new FerryError('ERR_FERRY_ABORTED', 'cancelled by the operator');
    this.channel.abort(this.cancelled);
    return true;
  }

  private checkTimeout(): void {
    if (this.cancelled) throw this.cancelled;
    this.progress();
    if (this.elapsed() > this.options.timeoutMs) throw this.timeoutError();
  }

  /** Sends a run of pages, cut into chunks, zero pages as markers. */
  private async sendPages(first: number, count: number): Promise<void> {
    const g = this.guest;
    const chunk = CHUNK_BYTES / g.pageSize;
    for (let at = first; at < first + count; ) {
      const n = g.pageRunLimit(at, Math.min(chunk, first + count - at));
      const view = g.memoryPages(at, n);
      const zeros = zeroPages(view, g.pageSize);
      let z = 0;
      for (let i = 0; i < n; ) {
        const isZero = z < zeros.length && zeros[z] === i;
        let len = 1;
        if (isZero) {
          while (z + len < zeros.length && zeros[z + len] === i + len) len++;
          z += len;
          await this.room(0, SPACE_MEMORY);
          this.builder.addZero(at + i, len);
          this.memory.zeroUnits += len;
          this.passStats.zeroPages += len;
        } else {
          const nextZero = z < zeros.length ? zeros[z]! : n;
          len = nextZero - i;
          const bytes = view.subarray(i * g.pageSize, (i + len) * g.pageSize);
          await this.room(bytes.length, SPACE_MEMORY);
          this.builder.addPages(at + i, len, bytes);
          this.memory.dataUnits += len;
          this.memory.dataBytes += bytes.length;
          this.passStats.pages += len;
        }
        i += len;
      }
      at += n;
      this.checkTimeout();
    }
  }

  /** Sends a run of disk blocks, zero blocks as markers. */
  private async sendBlocks(first: number, count: number): Promise<void> {
    const g = this.guest;
    const chunk = CHUNK_BYTES / g.blockSize;
    for (let at = first; at < first + count; at += chunk) {
      const n = Math.min(chunk, first + count - at);
      const data = g.readBlocks(at, n, this.scratch);
      const zeros = zeroPages(data, g.blockSize);
      let z = 0;
      for (let i = 0; i < n; i++) {
        if (z < zeros.length && zeros[z] === i) {
          z++;
          await this.room(0, SPACE_DISK);
          this.builder.addZero(at + i, 1);
          this.disk.zeroUnits++;
          this.passStats.zeroBlocks++;
        } else {
          const bytes = data.subarray(i * g.blockSize, (i + 1) * g.blockSize);
          await this.room(bytes.length, SPACE_DISK);
          this.builder.addData(at + i, 1, bytes);
          this.disk.dataUnits++;
          this.disk.dataBytes += bytes.length;
          this.passStats.blocks++;
        }
      }
      this.checkTimeout();
    }
  }

  private passStarted = performance.now();
  /** Bytes of guest this pass covers (pages and blocks, zero or not). */
  private passPlanned = 0;

  private timeoutError(): FerryError {
    return new FerryError('ERR_FERRY_TIMEOUT', `migration did not converge within ${this.options.timeoutMs} ms; the guest keeps running on the source`);
  }

  /** `final`: the switch-over pass, whose end is COMPLETE's answer, not an acknowledgement. */
  private async runPass(pages: Array<[number, number]>, blocks: Array<[number, number]>, final = false): Promise<PassReport> {
    this.pass++;
    this.passStats = this.newPass();
    const t0 = performance.now();
    this.passStarted = t0;
    this.passPlanned = pages.reduce((n, [, c]) => n + c, 0) * this.guest.pageSize + blocks.reduce((n, [, c]) => n + c, 0) * this.guest.blockSize;
    for (const [f, n] of pages) await this.sendPages(f, n);
    for (const [f, n] of blocks) await this.sendBlocks(f, n);
    await this.flush();
    await this.drain();
    const report = this.passStats;
    const endAt = performance.now();
    await this.send(MSG.PASS_END, encodeJson({ pass: report.pass, pages: report.pages, zeroPages: report.zeroPages, blocks: report.blocks, zeroBlocks: report.zeroBlocks }));
    if (!final) {
      await this.replies.passAcked(report.pass, this.options.timeoutMs - this.elapsed(), () => this.timeoutError());
      this.conv.recordRoundTrip(performance.now() - endAt);
    }
    report.durationMs = performance.now() - t0;
    this.passes.push(report);
    this.conv.recordPass(report.bytes, report.durationMs, report.pass > 1);
    return report;
  }

  private pendingBytes(): number {
    return this.guest.countDirtyPages() * this.guest.pageSize + this.guest.countDirtyBlocks() * this.guest.blockSize;
  }

  private zeroSkipped(): number {
    return this.memory.zeroUnits;
  }

  async run(): Promise<MigrationResult> {
    const g = this.guest;
    const outcome = new Outcome('source', this.options.migrationId);
    let pausedAt = 0;
    let completeSent = false;
    const signal = this.signal;
    const onCancel = () => this.cancel(signal?.reason);
    if (signal?.aborted) onCancel();
    else signal?.addEventListener('abort', onCancel, { once: true });
    try {
      const begin: Begin = {
        version: ENGINE_VERSION, migrationId: this.options.migrationId, memoryBytes: g.memoryBytes, diskBytes: g.diskBytes,
        pageSize: g.pageSize, blockSize: g.blockSize, verify: this.options.verify,
      };
      const beginAt = performance.now();
      await this.send(MSG.BEGIN, encodeJson(begin));
      await this.replies.beginOk();
      // BEGIN_OK answers at once: this is the link's round trip, which every pause holds.
      const roundTripMs = performance.now() - beginAt;
      this.conv.recordRoundTrip(roundTripMs);
      if (roundTripMs >= this.options.maxDowntimeMs) {
        // No pause can be shorter than a round trip: give up now, not at the timeout.
        throw new FerryError('ERR_FERRY_REFUSED', `the maximum downtime (${Math.round(this.options.maxDowntimeMs)} ms) is shorter than this link's round trip (${Math.round(roundTripMs)} ms), which every switch-over pause holds: allow at least ${this.conv.smallestUsefulLimitMs()} ms`);
      }

      // Pass 1: everything. Clear the log first: what is dirtied from here on is resent.
      g.clearDirtyLogs();
      let harvestedAt = performance.now();
      await this.runPass([[0, g.pageCount]], g.blockCount > 0 ? [[0, g.blockCount]] : []);

      for (;;) {
        const pending = this.pendingBytes();
        const now = performance.now();
        this.conv.recordDirty(pending, now - harvestedAt);
        const last = this.passes[this.passes.length - 1]!;
        this.onEvent({
          type: 'pass', pass: last.pass, bytesSent: this.bytesSent, bytesLeft: pending, throughput: this.conv.bandwidth,
          dirtyRate: this.conv.dirtyRate, zeroPagesSkipped: this.zeroSkipped(), throttlePercent: g.throttlePercent, elapsedMs: this.elapsed(),
        });
        if (this.conv.fits(pending)) {
          if (this.cancelled) throw this.cancelled;
          this.switchingOver = true;
          this.onEvent({ type: 'switch-over', bytesLeft: pending, estimatedDowntimeMs: this.conv.estimateMs(pending) });
          break;
        }
        this.checkTimeout();
        const throttle = this.conv.nextThrottle(g.throttlePercent, pending, last.bytes);
        if (throttle !== g.throttlePercent) {
          g.setThrottle(throttle);
          this.onEvent({ type: 'throttle', percent: throttle });
        }
        const pages = runsOf(g.harvestDirtyPages());
        const blocks = runsOf(g.harvestDirtyBlocks());
        harvestedAt = performance.now();
        await this.runPass(pages, blocks);
      }

      // Switch-over: from here the guest is paused here; it runs again here only on an answer
      // that the destination will never run it.
      pausedAt = performance.now();
      // Paused, a network outage is waited out only as long as the downtime allowed; after that
      // giving up (and resuming here, or asking the destination) beats a guest frozen for long.
      this.channel.limitReconnectWait?.(this.options.maxDowntimeMs);
      await g.pause();
      await this.runPass(runsOf(g.harvestDirtyPages()), runsOf(g.harvestDirtyBlocks()), true);
      await this.send(MSG.DEVICE, encodeJson(g.deviceState()));
      const digest = this.options.verify ? await g.digest() : null;
      outcome.sourceDigest = digest;
      const complete: Complete = { passes: this.pass, memory: this.memory, disk: this.disk, dataMessages: this.dataMessages, digest };
      completeSent = true;
      await this.send(MSG.COMPLETE, encodeJson(complete));

      const answer = await this.replies.decision(this.options.commitTimeoutMs);
      if (answer.type === 'committed') {
        outcome.destinationDigest = answer.digest;
        outcome.downtimeMs = performance.now() - pausedAt;
        outcome.outcome = 'committed';
        this.onEvent({ type: 'committed', downtimeMs: outcome.downtimeMs });
        this.replies.close();
        return this.finish(outcome);
      }
      // The destination said "not committed" (and never will): the guest is ours again.
      throw new FerryError('ERR_FERRY_ABORTED', `the destination refused the migration: ${answer.abort.code}: ${answer.abort.message}`);
    } catch (err) {
      // A cancel fails the channel, so what was thrown is usually the channel's error; say why.
      const e = this.cancelled ?? toFerryError(err);
      outcome.error = e.toJSON();
      const peerSaidNo = this.replies.peerAbort !== null;
      if (completeSent && !peerSaidNo) {
        // COMPLETE may have reached the destination, which may commit: stay paused, in doubt.
        outcome.outcome = 'in-doubt';
        this.channel.abort(e);
        this.onEvent({ type: 'in-doubt', code: e.code, message: e.message });
        return this.finish(outcome);
      }
      outcome.outcome = 'aborted';
      g.setThrottle(this.originalThrottle);
      if (pausedAt > 0) g.resume();
      await this.replies.abort({ code: e.code, message: e.message });
      this.onEvent({ type: 'aborted', code: e.code, message: e.message });
      return this.finish(outcome);
    } finally {
      signal?.removeEventListener('abort', onCancel);
    }
  }

  private finish(outcome: Outcome): MigrationResult {
    const cpu = process.cpuUsage(this.cpuStart);
    return outcome.result({
      passes: this.passes, totalMs: this.elapsed(), bytesSent: this.bytesSent, bytesReceived: this.channel.stats.bytesReceived,
      zeroPagesSkipped: this.zeroSkipped(), throttlePercent: this.guest.throttlePercent, cpu, channel: this.channel,
      roundTripMs: this.conv.roundTripMs,
    });
  }
}

export async function migrateSource(
  channel: Channel,
  guest: SourceGuest,
  options: SourceOptions,
  onEvent: (event: MigrationEvent) => void = () => {},
): Promise<MigrationResult> {
  const full = {
    migrationId: options.migrationId,
    maxDowntimeMs: options.maxDowntimeMs ?? DEFAULT_MAX_DOWNTIME_MS,
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    autoConverge: options.autoConverge ?? true,
    verify: options.verify ?? false,
    commitTimeoutMs: options.commitTimeoutMs ?? DEFAULT_COMMIT_TIMEOUT_MS,
    maxBytesPerSecond: options.maxBytesPerSecond,
  };
  return new SourceMigration(channel, guest, full, onEvent, options.signal).run();
}

