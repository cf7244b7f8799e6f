/**
 * The source side of a migration, phase by phase: begin (BEGIN / BEGIN_OK, the round trip),
 * pre-copy (passes, convergence, throttle), switch-over (pause, last pass, DEVICE, COMPLETE), the
 * wait for the destination's decision, and giving up (resumed here, or paused in doubt). What goes
 * on the wire and its counts: data-sender.ts. docs/migration.md has the exchange and the safety
 * argument.
 */
import type { Channel } from '../channel/types.js';
import { FerryError, toFerryError } from '../errors.js';
import { Convergence } from './convergence.js';
import { DataSender, runsOf } from './data-sender.js';
import { ENGINE_VERSION, MSG, encodeJson, type Begin, type Complete } from './messages.js';
import { Outcome } from './outcome.js';
import { PeerReplies } from './peer.js';
import { chunkDigestsOf, CHUNK_BYTES, newVerifyKey, VERIFY_ALGORITHM, type ChunkDigests } from './verify.js';
import { formatLimit } from '../common/units.js';
import {
  DEFAULT_COMMIT_TIMEOUT_MS,
  DEFAULT_MAX_DOWNTIME_MS,
  DEFAULT_TIMEOUT_MS,
  type MigrationEvent,
  type MigrationResult,
  type PassReport,
  type SourceGuest,
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

class SourceMigration {
  private readonly out: DataSender;
  private readonly passes: PassReport[] = [];
  private readonly conv: Convergence;
  private readonly outcome: Outcome;
  private readonly started = performance.now();
  private readonly cpuStart = process.cpuUsage();
  private readonly originalThrottle: number;
  private readonly replies: PeerReplies;
  /** When verifying: the tags of what was sent, kept up to date as the passes go (verify.ts). */
  private readonly digests: ChunkDigests | null;
  /** When verifying: the tag key, until VERIFY_KEY has carried it to the destination. */
  private verifyKey: Buffer | null = null;
  /** When the guest was paused for the switch-over; 0 while it runs. */
  private pausedAt = 0;
  /** COMPLETE was handed to the channel: from then on the destination may commit. */
  private completeSent = false;
  /** Set, in the same tick as the 'switch-over' event, once the engine decided to pause: no cancel from then on. */
  private switchingOver = false;
  /** The operator's cancel, once accepted. */
  private cancelled: FerryError | null = null;
  /** Bytes of guest this pass covers (pages and blocks, zero or not). */
  private passPlanned = 0;
  private lastProgress = performance.now();
  /** Bytes the destination had acknowledged at the last progress event (the rate is over the time since). */
  private lastAcked = 0;

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
    this.out = new DataSender(channel, guest, this.replies, (space, first, count, bytes, zeros) => {
      this.checkTimeout();
      // Verifying: tagged from the bytes the zero scan just read (verify.ts).
      this.digests?.update(space, first, count, bytes, zeros);
    });
    this.outcome = new Outcome('source', options.migrationId);
    if (options.verify) {
      this.verifyKey = newVerifyKey();
      this.digests = chunkDigestsOf(guest, this.verifyKey);
    } else this.digests = null;
  }

  /** The phases in order; any failure on the way ends in giveUp. */
  async run(): Promise<MigrationResult> {
    const signal = this.signal;
    const onCancel = () => this.cancel(signal?.reason);
    if (signal?.aborted) onCancel();
    else signal?.addEventListener('abort', onCancel, { once: true });
    try {
      await this.begin();
      await this.preCopy();
      await this.switchOver();
      return await this.awaitDecision();
    } catch (err) {
      return await this.giveUp(err);
    } finally {
      signal?.removeEventListener('abort', onCancel);
    }
  }

  /**
   * BEGIN / BEGIN_OK: the destination's guest has this geometry. BEGIN_OK answers at once, so this
   * is the link's round trip, which every pause holds: a downtime limit shorter than it is refused
   * now, not at the timeout.
   */
  private async begin(): Promise<void> {
    const g = this.guest;
    const begin: Begin = {
      version: ENGINE_VERSION,
      migrationId: this.options.migrationId,
      memoryBytes: g.memoryBytes,
      diskBytes: g.diskBytes,
      pageSize: g.pageSize,
      blockSize: g.blockSize,
      verify: this.options.verify,
    };
    const beginAt = performance.now();
    await this.out.send(MSG.BEGIN, encodeJson(begin));
    await this.replies.beginOk();
    const roundTripMs = performance.now() - beginAt;
    this.conv.recordRoundTrip(roundTripMs);
    if (roundTripMs >= this.options.maxDowntimeMs) {
      throw new FerryError(
        'ERR_FERRY_REFUSED',
        `--max-downtime ${formatLimit(this.options.maxDowntimeMs)} is shorter than this link's round trip (${formatLimit(roundTripMs)}), which every switch-over pause holds: allow at least ${formatLimit(this.conv.smallestUsefulLimitMs())}`,
      );
    }
    if (this.verifyKey) {
      // Sealed by the time send resolves (the channel keeps only the sealed frame): wiped at once.
      await this.out.send(MSG.VERIFY_KEY, this.verifyKey);
      this.wipeVerifyKey();
    }
  }

  private wipeVerifyKey(): void {
    this.verifyKey?.fill(0);
    this.verifyKey = null;
  }

  /**
   * Pass 1 sends everything; each later pass what the guest dirtied meanwhile, the guest throttled
   * when it outruns the link, until what is left fits the pause (switchOverDue) or the time is up.
   */
  private async preCopy(): Promise<void> {
    const g = this.guest;
    // Clear the log first: what is dirtied from here on is resent.
    g.clearDirtyLogs();
    let harvestedAt = performance.now();
    let last = await this.runPass([[0, g.pageCount]], g.blockCount > 0 ? [[0, g.blockCount]] : []);
    for (;;) {
      const pending = this.pendingBytes();
      this.conv.recordDirty(pending, performance.now() - harvestedAt);
      this.onEvent({
        type: 'pass',
        pass: last.pass,
        bytesSent: this.out.bytesSent,
        bytesLeft: pending,
        throughput: this.conv.bandwidth,
        dirtyRate: this.conv.dirtyRate,
        zeroPagesSkipped: this.zeroSkipped(),
        throttlePercent: g.throttlePercent,
        elapsedMs: this.elapsed(),
      });
      if (this.switchOverDue(pending)) return;
      this.checkTimeout();
      this.throttle(pending, last.bytes);
      const pages = runsOf(g.harvestDirtyPages());
      const blocks = runsOf(g.harvestDirtyBlocks());
      harvestedAt = performance.now();
      last = await this.runPass(pages, blocks);
    }
  }

  /**
   * The switch-over decision: what is left fits the pause. The decision, its event and the guest
   * process's record of it fall in this one synchronous stretch, so a cancel is on one side of it
   * or the other: before, it ends the migration; from here on it is refused.
   */
  private switchOverDue(pending: number): boolean {
    if (!this.conv.fits(pending)) return false;
    if (this.cancelled) throw this.cancelled;
    this.switchingOver = true;
    this.onEvent({ type: 'switch-over', bytesLeft: pending, estimatedDowntimeMs: this.conv.estimateMs(pending) });
    return true;
  }

  /** Auto-converge: a step more throttle when the guest keeps dirtying more than half of what a pass sends. */
  private throttle(dirtied: number, sent: number): void {
    const g = this.guest;
    const throttle = this.conv.nextThrottle(g.throttlePercent, dirtied, sent);
    if (throttle === g.throttlePercent) return;
    g.setThrottle(throttle);
    this.onEvent({ type: 'throttle', percent: throttle });
  }

  /**
   * Pause the guest, send the last dirty pages and blocks, the device state, and COMPLETE with the
   * counts of everything sent. Verifying, the last pass is tagged as it is sent, paused, and every
   * chunk tag goes before COMPLETE.
   */
  private async switchOver(): Promise<void> {
    const g = this.guest;
    // From here the guest is paused here; it runs again here only on an answer that the
    // destination will never run it.
    this.pausedAt = performance.now();
    // Paused, a network outage is waited out only as long as the downtime allowed; after that
    // giving up (and resuming here, or asking the destination) beats a guest frozen for long.
    this.channel.limitReconnectWait?.(this.options.maxDowntimeMs);
    await g.pause();
    this.digests?.mark();
    await this.runPass(runsOf(g.harvestDirtyPages()), runsOf(g.harvestDirtyBlocks()), true);
    await this.out.send(MSG.DEVICE, encodeJson(g.deviceState()));
    const digest = this.digests ? await this.sendChunkDigests(this.digests) : null;
    this.outcome.sourceDigest = digest;
    const { memory, disk, dataMessages } = this.out;
    const complete: Complete = { passes: this.out.current.pass, memory, disk, dataMessages, digest };
    if (this.digests) complete.verify = { algorithm: VERIFY_ALGORITHM, chunkBytes: CHUNK_BYTES };
    this.completeSent = true;
    await this.out.send(MSG.COMPLETE, encodeJson(complete));
  }

  /** The chunk tags brought up to date (the guest is paused) and the last changed ones sent; returns the root. */
  private async sendChunkDigests(digests: ChunkDigests): Promise<string> {
    const root = digests.settle();
    await this.sendChangedDigests(digests);
    this.outcome.verification = digests.report(0, null);
    return root;
  }

  /** The chunk tags computed since the last send, as CHUNK_DIGESTS. */
  private async sendChangedDigests(digests: ChunkDigests): Promise<void> {
    for (const message of digests.messages()) await this.out.send(MSG.CHUNK_DIGESTS, message);
  }

  /** The destination's decision: COMMITTED (it runs the guest now), or ABORT ("not committed", and never will be). */
  private async awaitDecision(): Promise<MigrationResult> {
    const answer = await this.replies.decision(this.options.commitTimeoutMs);
    if (answer.type === 'committed') {
      const outcome = this.outcome;
      outcome.destinationDigest = answer.digest;
      outcome.downtimeMs = performance.now() - this.pausedAt;
      outcome.outcome = 'committed';
      // The destination commits only once it compared every chunk tag with its own.
      if (this.digests) outcome.verification = this.digests.report(this.digests.memory.chunkCount + this.digests.disk.chunkCount, null);
      this.onEvent({ type: 'committed', downtimeMs: outcome.downtimeMs });
      this.replies.close();
      return this.finish();
    }
    // The destination said "not committed" (and never will): the guest is ours again.
    throw new FerryError('ERR_FERRY_ABORTED', `the destination refused the migration: ${answer.abort.code}: ${answer.abort.message}`);
  }

  /**
   * Any failure, by where the hand-off stands. COMPLETE handed to the channel and no ABORT from the
   * destination: it may commit, so the guest stays paused, in doubt, for the agents to settle.
   * Otherwise the destination cannot commit (it never got COMPLETE, or said no): the throttle is
   * restored, the guest resumed if it was paused, and the destination told.
   */
  private async giveUp(err: unknown): Promise<MigrationResult> {
    const g = this.guest;
    const outcome = this.outcome;
    // A cancel fails the channel, so what was thrown is usually the channel's error; say why.
    const e = this.cancelled ?? toFerryError(err);
    outcome.error = e.toJSON();
    const peerSaidNo = this.replies.peerAbort !== null;
    if (this.completeSent && !peerSaidNo) {
      outcome.outcome = 'in-doubt';
      this.channel.abort(e);
      this.onEvent({ type: 'in-doubt', code: e.code, message: e.message });
      return this.finish();
    }
    outcome.outcome = 'aborted';
    g.setThrottle(this.originalThrottle);
    if (this.pausedAt > 0) g.resume();
    await this.replies.abort({ code: e.code, message: e.message });
    this.onEvent({ type: 'aborted', code: e.code, message: e.message });
    return this.finish();
  }

  /** `final`: the switch-over pass, whose end is COMPLETE's answer, not an acknowledgement. */
  private async runPass(pages: Array<[number, number]>, blocks: Array<[number, number]>, final = false): Promise<PassReport> {
    const report = this.out.beginPass();
    const t0 = performance.now();
    this.passPlanned =
      pages.reduce((n, [, c]) => n + c, 0) * this.guest.pageSize + blocks.reduce((n, [, c]) => n + c, 0) * this.guest.blockSize;
    for (const [f, n] of pages) await this.out.sendPages(f, n);
    for (const [f, n] of blocks) await this.out.sendBlocks(f, n);
    await this.out.endData();
    if (!final && this.digests) {
      // Verifying: the chunk tags this pass changed, computed and sent now rather than in the
      // pause, ahead of PASS_END, so they have arrived once it is acknowledged.
      this.digests.mark();
      await this.sendChangedDigests(this.digests);
    }
    const endAt = performance.now();
    await this.out.send(
      MSG.PASS_END,
      encodeJson({
        pass: report.pass,
        pages: report.pages,
        zeroPages: report.zeroPages,
        blocks: report.blocks,
        zeroBlocks: report.zeroBlocks,
      }),
    );
    if (!final) {
      await this.replies.passAcked(report.pass, this.options.timeoutMs - this.elapsed(), () => this.timeoutError());
      this.conv.recordRoundTrip(performance.now() - endAt);
    }
    report.durationMs = performance.now() - t0;
    this.passes.push(report);
    this.conv.recordPass(report.bytes, report.durationMs, report.pass > 1);
    return report;
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

  /** Between chunks of a pass and between passes: a cancel, progress, the deadline. */
  private checkTimeout(): void {
    if (this.cancelled) throw this.cancelled;
    this.progress();
    if (this.elapsed() > this.options.timeoutMs) throw this.timeoutError();
  }

  private timeoutError(): FerryError {
    return new FerryError(
      'ERR_FERRY_TIMEOUT',
      `migration did not converge within ${formatLimit(this.options.timeoutMs)} (--timeout); the guest keeps running on the source`,
    );
  }

  /** A 'pass' event at most once a second during a long pass, so a big first pass shows progress. */
  private progress(): void {
    const now = performance.now();
    if (now - this.lastProgress < 1000) return;
    const previous = this.lastProgress;
    this.lastProgress = now;
    const since = Math.max(1, now - previous);
    const p = this.out.current;
    const unqueued = this.passPlanned - (p.pages + p.zeroPages) * this.guest.pageSize - (p.blocks + p.zeroBlocks) * this.guest.blockSize;
    if (unqueued <= 0) return;
    // What arrived, not what the send window took: a pass's first second would otherwise show the
    // window filled (64 MiB) as if sent, at a multiple of the link's rate.
    const acked = Math.min(this.out.bytesSent, this.channel.stats.bytesAcknowledged);
    const rate = (Math.max(0, acked - this.lastAcked) * 1000) / since;
    this.lastAcked = acked;
    this.onEvent({
      type: 'pass',
      pass: p.pass,
      bytesSent: acked,
      bytesLeft: unqueued + (this.out.bytesSent - acked),
      throughput: rate,
      dirtyRate: this.conv.dirtyRate,
      zeroPagesSkipped: this.zeroSkipped(),
      throttlePercent: this.guest.throttlePercent,
      elapsedMs: this.elapsed(),
    });
  }

  private elapsed(): number {
    return performance.now() - this.started;
  }

  private pendingBytes(): number {
    return this.guest.countDirtyPages() * this.guest.pageSize + this.guest.countDirtyBlocks() * this.guest.blockSize;
  }

  private zeroSkipped(): number {
    return this.out.memory.zeroUnits;
  }

  private finish(): MigrationResult {
    this.wipeVerifyKey();
    this.digests?.stop();
    const cpu = process.cpuUsage(this.cpuStart);
    return this.outcome.result({
      passes: this.passes,
      totalMs: this.elapsed(),
      bytesSent: this.out.bytesSent,
      bytesReceived: this.channel.stats.bytesReceived,
      zeroPagesSkipped: this.zeroSkipped(),
      throttlePercent: this.guest.throttlePercent,
      cpu,
      channel: this.channel,
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
