/**
 * A dirty log: one bit per page (or disk block) in a SharedArrayBuffer, set by the workload
 * worker and harvested by the migration engine, as KVM's dirty bitmap is.
 *
 * Ordering (why no write is ever lost): the writer stores the data first and only then sets the
 * bit (Atomics.or); the harvester clears a word (Atomics.exchange) first and only then reads the
 * pages it named. Atomics are sequentially consistent and order the plain memory accesses around
 * them, so for any write W whose bit-set S happens:
 *   - after the harvester's exchange X: the bit survives X, and the page is sent again next pass;
 *   - before X: W happened before S, before X, before the read, so the read sees W (or later).
 * Either way the newest data reaches the destination by the pass after W. The reverse order (bit
 * first, data after) would lose W when X and the read both fall between the bit and the data.
 * The final pass runs while the worker is halted (its HALTED acknowledgement is itself an Atomics
 * store the guest process waits on), so it leaves nothing behind.
 */
export class DirtyLog {
  readonly bits: Int32Array;
  readonly length: number;

  /** `buffer`: a SharedArrayBuffer of at least wordsFor(length) 32-bit words, or a new one. */
  constructor(length: number, buffer?: SharedArrayBuffer) {
    this.length = length;
    this.bits = new Int32Array(buffer ?? new SharedArrayBuffer(DirtyLog.bytesFor(length)), 0, DirtyLog.wordsFor(length));
  }

  static wordsFor(length: number): number {
    return Math.ceil(length / 32) || 1;
  }

  static bytesFor(length: number): number {
    return DirtyLog.wordsFor(length) * 4;
  }

  get buffer(): SharedArrayBuffer {
    return this.bits.buffer as SharedArrayBuffer;
  }

  /** Writer side: call after the data write has completed. */
  mark(index: number): void {
    Atomics.or(this.bits, index >>> 5, 1 << (index & 31));
  }

  markRange(first: number, count: number): void {
    for (let i = first; i < first + count; i++) this.mark(i);
  }

  /** Fetches and clears the whole log, returning the indexes that were set, ascending. */
  harvest(): Uint32Array {
    const words = this.bits;
    let out = new Uint32Array(64);
    let n = 0;
    for (let w = 0; w < words.length; w++) {
      if (Atomics.load(words, w) === 0) continue;
      let v = Atomics.exchange(words, w, 0);
      while (v !== 0) {
        const bit = 31 - Math.clz32(v & -v);
        v &= v - 1;
        if (n === out.length) {
          const bigger = new Uint32Array(out.length * 2);
          bigger.set(out);
          out = bigger;
        }
        out[n++] = w * 32 + bit;
      }
    }
    return out.subarray(0, n);
  }

  /** How many bits are set, without clearing them. */
  count(): number {
    let n = 0;
    const words = this.bits;
    for (let w = 0; w < words.length; w++) {
      let v = Atomics.load(words, w);
      while (v !== 0) {
        v &= v - 1;
        n++;
      }
    }
    return n;
  }

  /** Clears the log (the start of a migration: everything is sent in the first pass anyway). */
  clear(): void {
    for (let w = 0; w < this.bits.length; w++) Atomics.store(this.bits, w, 0);
  }
}
