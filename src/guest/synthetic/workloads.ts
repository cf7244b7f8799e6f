/**
 * The three workloads, as the worker runs them: a one-time setup done in slices (so a pause can
 * interrupt it), then single operations the pacer calls at the configured rate. Everything a
 * workload must carry across a migration is in its device state; the rest lives in guest memory.
 */
import { randomFillSync } from 'node:crypto';
import type { Workload } from '../types.js';
import type { DirtyLog } from './dirty-log.js';
import type { DiskImage } from './disk.js';
import { KvStore, VALUE_BYTES, type KvCounters } from './kv-store.js';
import { BLOCK_SIZE, PAGE_SIZE, PAGES_PER_SLOT } from './layout.js';
import type { GuestMemory } from './memory.js';

export interface WorkloadDeviceState {
  kind: Workload['kind'];
  /** xorshift32 state. */
  rng: number;
  /** Bytes of memory the idle fill / keys the kv preload have done (setup survives a migration). */
  setupDone: number;
  ops: number;
  kv?: KvCounters;
}

export interface GuestParts {
  memory: GuestMemory;
  pageLog: DirtyLog;
  disk: DiskImage | null;
  blockLog: DirtyLog | null;
}

export interface WorkloadRunner {
  /** Operations a second wanted (0: none after setup). */
  readonly rate: number;
  /** Does a slice of setup; true once setup is complete. */
  setupSlice(): boolean;
  op(): void;
  state(): WorkloadDeviceState;
}

/** A random pool the writers copy from, so a page write costs a memcpy, not a PRNG per byte. */
const POOL_BYTES = 1 << 20;

class Rng {
  constructor(public s: number) {
    if (this.s === 0) this.s = 0x9e3779b9;
  }

  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }

  /** Uniform-enough integer below n (n up to 2^32; a 53-bit draw avoids modulo bias worth caring about). */
  below(n: number): number {
    return Math.floor(((this.next() * 4294967296 + this.next()) / 18446744073709552000) * n);
  }
}

const SETUP_SLICE_BYTES = 1 << 20;

export function createWorkload(workload: Workload, parts: GuestParts, seed: number, resumed?: WorkloadDeviceState): WorkloadRunner {
  const rng = new Rng(resumed?.rng ?? seed);
  let setupDone = resumed?.setupDone ?? 0;
  let ops = resumed?.ops ?? 0;
  const { memory, pageLog } = parts;
  const pool = new Uint8Array(POOL_BYTES);
  randomFillSync(pool);
  const base = { kind: workload.kind };

  // Fills memory once with random (so non-zero, incompressible) bytes, a slice a call; then, for
  // `withDisk`, the disk: setupDone counts memory bytes, then disk bytes after them.
  const fillSlice = (withDisk: boolean): boolean => {
    const disk = withDisk ? parts.disk : null;
    const total = memory.bytes + (disk?.bytes ?? 0);
    if (setupDone >= total) return true;
    if (setupDone < memory.bytes) {
      const page = setupDone / PAGE_SIZE;
      const count = memory.runLimit(page, SETUP_SLICE_BYTES / PAGE_SIZE);
      randomFillSync(memory.pages(page, count));
      pageLog.markRange(page, count);
      setupDone = Math.min(memory.bytes, setupDone + count * PAGE_SIZE);
    } else if (disk && parts.blockLog) {
      const offset = setupDone - memory.bytes;
      const bytes = Math.min(SETUP_SLICE_BYTES, disk.bytes - offset);
      disk.writeAt(offset, randomFillSync(new Uint8Array(bytes)));
      parts.blockLog.markRange(Math.floor(offset / BLOCK_SIZE), Math.ceil(bytes / BLOCK_SIZE));
      setupDone += bytes;
    }
    return setupDone >= total;
  };

  switch (workload.kind) {
    case 'idle':
      return {
        rate: 0,
        setupSlice: () => fillSlice(false),
        op() {},
        state: () => ({ ...base, rng: rng.s, setupDone, ops }),
      };
    case 'kv': {
      const store = new KvStore(memory, pageLog, resumed?.kv);
      const total = workload.getsPerSecond + workload.setsPerSecond;
      const value = new Uint8Array(VALUE_BYTES);
      return {
        rate: total,
        setupSlice() {
          // Preload every key once, as a store loaded from its snapshot would be.
          const end = Math.min(store.keyCount, setupDone + 4096);
          for (; setupDone < end; setupDone++) store.set(setupDone, pool.subarray(setupDone % 1000, (setupDone % 1000) + VALUE_BYTES));
          return setupDone >= store.keyCount;
        },
        op() {
          const key = rng.below(store.keyCount);
          if (rng.below(total) < workload.getsPerSecond) {
            store.get(key);
          } else {
            const from = rng.below(POOL_BYTES - VALUE_BYTES);
            value.set(pool.subarray(from, from + VALUE_BYTES));
            store.set(key, value);
          }
          ops++;
        },
        state: () => ({ ...base, rng: rng.s, setupDone, ops, kv: { ...store.counters } }),
      };
    }
    case 'dirty': {
      const { disk, blockLog } = parts;
      const stamp = new DataView(new ArrayBuffer(8));
      const stampBytes = new Uint8Array(stamp.buffer);
      return {
        rate: workload.bytesPerSecond / PAGE_SIZE,
        setupSlice: () => !workload.fill || fillSlice(true),
        op() {
          ops++;
          stamp.setFloat64(0, ops, true);
          const from = rng.below(POOL_BYTES / PAGE_SIZE) * PAGE_SIZE;
          const data = pool.subarray(from, from + PAGE_SIZE);
          data.set(stampBytes, 0);
          // One write in eight goes to the disk, when there is one.
          if (disk && blockLog && rng.below(8) === 0) {
            const offset = rng.below(Math.floor(disk.bytes / PAGE_SIZE)) * PAGE_SIZE;
            disk.writeAt(offset, data);
            blockLog.mark(Math.floor(offset / BLOCK_SIZE));
            return;
          }
          const page = rng.below(memory.pageCount);
          const slot = Math.floor(page / PAGES_PER_SLOT);
          memory.slots[slot]!.set(data, (page - slot * PAGES_PER_SLOT) * PAGE_SIZE);
          pageLog.mark(page);
        },
        state: () => ({ ...base, rng: rng.s, setupDone, ops }),
      };
    }
  }
}
