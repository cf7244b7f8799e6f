/**
 * When to switch over and when to throttle, from what the passes measured (QEMU's rules, as in
 * migration/ram.c): switch over once the dirty remainder would cross the link within the
 * downtime limit; raise the throttle when, twice in a row, the guest dirtied more than half of
 * what a pass managed to send (first step 20%, then +10%, at most 99%).
 */
export const THROTTLE_INITIAL = 20;
export const THROTTLE_STEP = 10;
export const THROTTLE_MAX = 99;
/**
 * Share of the downtime limit the last pass's data may take. The rest is for what the pause
 * costs besides the data: halting the workload, device state, the destination's checks, its
 * agent's durable ownership record, the commit round trip. Measured with a 2 GiB kv guest at
 * 200 000 ops/s: without headroom, one run in two overshot 500 ms.
 */
export const SWITCH_HEADROOM = 0.7;
/** Passes shorter than this say little about bandwidth; the previous estimate stands. */
const MIN_MEASURE_MS = 20;
/**
 * Before any pass of dirty pages was measured, the switch-over estimate assumes they cross at this
 * share of pass 1's rate. Pass 1 sends memory in long runs; the last pass sends what the guest
 * dirtied, scattered pages, and went at 0.50-0.57 of pass 1's rate here (2 GiB kv guest at
 * 200 000 ops/s: 200 MB in 358-433 ms after 1.07 GB in 1.09-1.19 s), which the estimate from pass 1
 * alone missed by enough to overshoot a 500 ms limit (docs/migration.md, "Convergence").
 */
export const DIRTY_SHARE_BEFORE_MEASURED = 0.5;

export class Convergence {
  /** Payload bytes a second the link drained, smoothed over passes. */
  bandwidth = 0;
  /** Bytes a second the guest dirtied, as last measured. */
  dirtyRate = 0;
  /** Payload bytes a second the passes of dirty pages (all after the first) drained, smoothed; 0 before one. */
  dirtyPassBandwidth = 0;
  /**
   * The link's round trip, in ms: the shortest of the exchanges the engine timed (BEGIN to BEGIN_OK,
   * then each PASS_END to its PASS_ACK, which holds a round trip and whatever of the pass was still
   * on its way). The pause holds one on top of the data: the last pages go one way, the decision
   * comes back. On a LAN it is a millisecond; at 150 ms it is most of what SWITCH_HEADROOM leaves of
   * a 500 ms limit. Every sample is at least the true round trip, so the shortest is the best, and a
   * first sample that a busy moment stretched does not stay. Null until measured (the estimate then
   * counts none).
   */
  roundTripMs: number | null = null;
  private overruns = 0;

  constructor(
    readonly maxDowntimeMs: number,
    readonly autoConverge: boolean,
    private readonly cap?: number,
  ) {}

  /**
   * `dirtyPages`: a pass of what the guest dirtied (every pass after the first). Its rate counts for
   * the switch-over estimate however short the pass was: a short pass's rate, fixed costs included,
   * is what the next short pass will take.
   */
  recordPass(bytes: number, ms: number, dirtyPages = false): void {
    if (bytes === 0) return;
    let rate = (bytes * 1000) / Math.max(ms, 1);
    if (this.cap) rate = Math.min(rate, this.cap);
    if (dirtyPages) this.dirtyPassBandwidth = this.dirtyPassBandwidth === 0 ? rate : 0.5 * this.dirtyPassBandwidth + 0.5 * rate;
    if (ms < MIN_MEASURE_MS && this.bandwidth > 0) return;
    this.bandwidth = this.bandwidth === 0 ? rate : 0.5 * this.bandwidth + 0.5 * rate;
  }

  recordDirty(bytes: number, ms: number): void {
    if (ms > 0) this.dirtyRate = (bytes * 1000) / ms;
  }

  /**
   * Estimated pause, in ms, to send `pendingBytes` (dirty pages) now and hear the decision: at the
   * rate passes of dirty pages went, or before one was measured at a share of pass 1's, plus the
   * round trip; Infinity before any measurement. Nothing left estimates 0: switching over then is the
   * shortest pause there can be, whatever the link.
   */
  estimateMs(pendingBytes: number): number {
    if (pendingBytes === 0) return 0;
    const rate = this.dirtyPassBandwidth > 0 ? this.dirtyPassBandwidth : this.bandwidth * DIRTY_SHARE_BEFORE_MEASURED;
    return rate > 0 ? (pendingBytes * 1000) / rate + (this.roundTripMs ?? 0) : Infinity;
  }

  /** One timed exchange, as above. */
  recordRoundTrip(ms: number): void {
    if (ms >= 0 && (this.roundTripMs === null || ms < this.roundTripMs)) this.roundTripMs = ms;
  }

  /** The shortest limit that leaves a pause room for data on this link. */
  smallestUsefulLimitMs(): number {
    return Math.ceil((this.roundTripMs ?? 0) / SWITCH_HEADROOM);
  }

  fits(pendingBytes: number): boolean {
    return this.estimateMs(pendingBytes) <= this.maxDowntimeMs * SWITCH_HEADROOM;
  }

  /**
   * The throttle to apply after a pass that sent `sentBytes` while the guest dirtied
   * `dirtiedBytes`; returns `current` when no change is due.
   */
  nextThrottle(current: number, dirtiedBytes: number, sentBytes: number): number {
    if (!this.autoConverge) return current;
    if (dirtiedBytes * 2 > sentBytes) this.overruns++;
    else this.overruns = 0;
    if (this.overruns < 2) return current;
    this.overruns = 0;
    return current === 0 ? THROTTLE_INITIAL : Math.min(THROTTLE_MAX, current + THROTTLE_STEP);
  }
}
