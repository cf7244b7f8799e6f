/**
 * The memory DATA payloads are received into at the destination, used again once their pages are
 * in guest memory.
 *
 * Without it every DATA message (up to 1 MiB) is opened (encrypted) or read (plain) into a fresh
 * buffer: gigabytes of short-lived external memory per migration, whose allocation, first touch
 * and garbage collection cost more destination CPU than the copy into guest memory. The channel
 * takes a DATA payload's memory from `take` (its `allocatePayload` hook); the engine hands it back
 * with `release` once it has copied the pages out, and nothing else holds it then.
 *
 * Safety: a buffer is handed out again only after it came back through `release`, and only once
 * per release — releasing a buffer that is not out (twice, or one the pool never gave) throws, so
 * a bug cannot make two payloads share memory. Buffers are not wiped between uses: they hold guest
 * data, which lands in guest memory anyway, never key material. The pool keeps at most `maxFree`
 * buffers; what comes back beyond that is left to the garbage collector, and `clear()` lets go of
 * all of them when the migration is over. Buffers out are bounded by the channel: its window
 * (plus one open batch) of payloads, each at least half a buffer, so at most twice that memory,
 * plus the few messages the page writer is still copying into guest memory (page-writer.ts).
 */
import { DEFAULT_WINDOW_BYTES } from '../channel/index.js';
import { FerryError } from '../errors.js';
import { MAX_DATA_MESSAGE_BYTES, MSG } from './messages.js';

export interface PayloadPoolStats {
  /** Buffers the pool allocated (fresh memory). */
  allocated: number;
  /** Payloads served from a buffer used before. */
  reused: number;
  /** Payloads larger than a pool buffer, or smaller than half of one: served fresh, never pooled. */
  unpooled: number;
  /** Buffers handed out and not yet released. */
  out: number;
}

const FREE = 0;
const OUT = 1;
/** Came back when the pool was full, or after clear(): never handed out again. */
const DROPPED = 2;

interface Slot {
  buf: Buffer;
  state: number;
}

export class PayloadPool {
  private readonly free: Buffer[] = [];
  /** The state of every buffer the pool made, by its memory; weak, so a buffer dropped while out is collected. */
  private readonly slots = new WeakMap<ArrayBufferLike, Slot>();
  private cleared = false;
  readonly stats: PayloadPoolStats = { allocated: 0, reused: 0, unpooled: 0, out: 0 };

  /**
   * @param bufferBytes size of each buffer: the largest payload served from the pool
   * @param maxFree buffers kept for reuse at most
   */
  constructor(
    readonly bufferBytes: number,
    readonly maxFree: number,
  ) {
    if (!Number.isInteger(bufferBytes) || bufferBytes < 1)
      throw new FerryError('ERR_FERRY_INPUT', `payload pool: buffer size ${bufferBytes}`);
    if (!Number.isInteger(maxFree) || maxFree < 0) throw new FerryError('ERR_FERRY_INPUT', `payload pool: maxFree ${maxFree}`);
  }

  /**
   * Memory of exactly `length` bytes, the caller's until it calls release() with it. Only lengths
   * from half a buffer to a whole one come from the pool: a small payload in a large buffer would
   * let a window full of small messages pin many times its size.
   */
  take(length: number): Uint8Array {
    if (length > this.bufferBytes || length * 2 < this.bufferBytes) {
      this.stats.unpooled++;
      return Buffer.allocUnsafe(length);
    }
    let slot: Slot;
    const buf = this.free.pop();
    if (buf) {
      slot = this.slots.get(buf.buffer)!;
      if (slot.state !== FREE) throw new FerryError('ERR_FERRY_INTERNAL', 'payload pool: a buffer still in use was about to be handed out');
      this.stats.reused++;
    } else {
      // A buffer of its own (not a slice of Node's shared pool): its memory identifies it.
      slot = { buf: Buffer.allocUnsafeSlow(this.bufferBytes), state: FREE };
      this.slots.set(slot.buf.buffer, slot);
      this.stats.allocated++;
    }
    slot.state = OUT;
    this.stats.out++;
    return slot.buf.subarray(0, length);
  }

  /**
   * Hands back memory take() gave (any view of it); the caller must hold no reference still in
   * use. Memory the pool did not make (an unpooled payload, a control message) is ignored.
   * Throws ERR_FERRY_INTERNAL for a buffer that is not out: released twice.
   */
  release(payload: Uint8Array): void {
    const slot = this.slots.get(payload.buffer);
    if (!slot) return;
    if (slot.state !== OUT) throw new FerryError('ERR_FERRY_INTERNAL', 'payload pool: a buffer was released twice');
    this.stats.out--;
    if (!this.cleared && this.free.length < this.maxFree) {
      slot.state = FREE;
      this.free.push(slot.buf);
    } else {
      slot.state = DROPPED; // left to the garbage collector
    }
  }

  /** Lets go of every free buffer (the migration is over); buffers still out are not kept when they come back. */
  clear(): void {
    this.cleared = true;
    for (const b of this.free) this.slots.get(b.buffer)!.state = DROPPED;
    this.free.length = 0;
  }

  /** Buffers waiting to be used again. */
  get freeCount(): number {
    return this.free.length;
  }
}

/** Payloads one channel may have opened and not yet delivered, beyond its window: one batch (frame-crypto.ts). */
const OPEN_BATCH_BYTES = 16 * 1024 * 1024;

/**
 * A pool for one incoming migration: buffers of the largest DATA message (the source fills each
 * message to about 1 MiB, all but the last of a pass), as many kept as the channel's window and one
 * open batch hold at once (77 at the default window), so a destination that falls behind still
 * finds its buffers again.
 */
export function dataPayloadPool(windowBytes = DEFAULT_WINDOW_BYTES): PayloadPool {
  return new PayloadPool(MAX_DATA_MESSAGE_BYTES, Math.ceil((windowBytes + OPEN_BATCH_BYTES) / MAX_DATA_MESSAGE_BYTES));
}

/** The channel's `allocatePayload`: DATA messages from `pool`, every other (small) message fresh memory. */
export function receiveInto(pool: PayloadPool): (messageType: number, length: number) => Uint8Array {
  return (messageType, length) => (messageType === MSG.DATA ? pool.take(length) : Buffer.allocUnsafe(length));
}
