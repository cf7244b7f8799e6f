/**
 * Writes arriving pages into the destination guest's memory, off the event loop when it can.
 *
 * At the destination the copy into guest memory is where fresh memory is touched for the first
 * time, and on a virtual host each first touch is a page fault the hypervisor must back: `perf`
 * of a 4 GiB migration put 46 % of all samples in the kernel's clear_page under that copy
 * (docs/performance.md). Done inline, every fault stops the event loop that also reads the sockets
 * and schedules decryption. With a `copy` function (the addon's copyBatch: memcpy on the libuv
 * pool) each DATA message's pages are copied on a pool thread while the loop goes on with the next
 * messages; without one (no addon) the copy is synchronous, as before.
 *
 * Order: two writes to the same page must land in the order they arrived. Copies of one message run
 * in order on one thread; copies of different messages may run at once only when their pages do
 * not overlap — a message that touches a page some copy in flight is writing waits for every copy
 * in flight first. Pass 1 sends each page once, so its copies never wait on each other.
 * `drain()` waits for everything queued; the engine drains before it acknowledges a pass, before
 * it zeroes pages that were written, and before it checks COMPLETE, so nothing it decides on is
 * still in flight.
 *
 * Memory: at most `maxInFlight` messages are being copied; `write` waits for room, so a slow copy
 * pushes back on the channel (and through its window on the source), never piles up payloads.
 */
import { FerryError, toFerryError } from '../errors.js';

/** Copies flat[2i+1] into flat[2i] for each i, in order; resolves when all are done. */
export type CopyBatch = (flat: Uint8Array[]) => Promise<void>;

/** One copy: pages [first, first + count) of guest memory, `into` being their bytes, from `from`. */
export interface PageCopy {
  first: number;
  count: number;
  into: Uint8Array;
  from: Uint8Array;
}

interface InFlight {
  ranges: { first: number; end: number }[];
  done: Promise<void>;
}

export const DEFAULT_COPIES_IN_FLIGHT = 4;

export class PageWriter {
  private readonly inFlight = new Set<InFlight>();
  private failure: FerryError | null = null;

  constructor(
    private readonly copy: CopyBatch | null,
    private readonly maxInFlight = DEFAULT_COPIES_IN_FLIGHT,
  ) {}

  /** Whether copies run off the event loop (the addon is loaded). */
  get offThread(): boolean {
    return this.copy !== null;
  }

  /**
   * Queues one message's copies; `done` runs exactly once, when all of them have landed, failed or
   * were refused. Resolves once the copies are queued (without a copy function: done).
   */
  async write(copies: PageCopy[], done: () => void): Promise<void> {
    let handedOver = false;
    try {
      this.check();
      if (this.copy === null || copies.length === 0) {
        for (const c of copies) c.into.set(c.from);
        return;
      }
      const ranges = copies.map((c) => ({ first: c.first, end: c.first + c.count }));
      if (this.overlapsInFlight(ranges)) await this.drain();
      while (this.inFlight.size >= this.maxInFlight) await Promise.race([...this.inFlight].map((f) => f.done));
      this.check();
      const flat: Uint8Array[] = [];
      for (const c of copies) flat.push(c.into, c.from);
      const entry: InFlight = {
        ranges,
        done: this.copy(flat)
          .catch((err: unknown) => {
            this.failure ??= toFerryError(err, 'ERR_FERRY_INTERNAL');
          })
          .finally(() => {
            this.inFlight.delete(entry);
            done();
          }),
      };
      this.inFlight.add(entry);
      handedOver = true;
    } finally {
      // Exactly once per write: here unless a copy in flight will call it.
      if (!handedOver) done();
    }
  }

  /** Waits for every copy queued so far; throws if one of them failed. */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight].map((f) => f.done));
    this.check();
  }

  private overlapsInFlight(ranges: { first: number; end: number }[]): boolean {
    for (const f of this.inFlight) {
      for (const a of f.ranges) for (const b of ranges) if (a.first < b.end && b.first < a.end) return true;
    }
    return false;
  }

  private check(): void {
    if (this.failure) throw new FerryError(this.failure.code, `writing pages into guest memory failed: ${this.failure.message}`);
  }
}
