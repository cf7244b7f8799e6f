/**
 * Guest memory: 1 GiB SharedArrayBuffer slots (the last one shorter), shared with the workload
 * worker. Allocation is lazy: the kernel maps never-written pages to its zero page, so a fresh
 * 8 GiB guest costs almost nothing until it writes.
 */
import { FerryError } from '../../errors.js';
import { PAGE_SIZE, PAGES_PER_SLOT, SLOT_SIZE, pageCountOf } from './layout.js';

export class GuestMemory {
  readonly bytes: number;
  readonly pageCount: number;
  readonly slots: Uint8Array[];

  /** `slots`: existing shared buffers (the worker's side), or undefined to allocate them. */
  constructor(bytes: number, slots?: SharedArrayBuffer[]) {
    this.bytes = bytes;
    this.pageCount = pageCountOf(bytes);
    const buffers = slots ?? GuestMemory.allocate(bytes);
    this.slots = buffers.map((b) => new Uint8Array(b));
  }

  static allocate(bytes: number): SharedArrayBuffer[] {
    const out: SharedArrayBuffer[] = [];
    try {
      for (let off = 0; off < bytes; off += SLOT_SIZE) out.push(new SharedArrayBuffer(Math.min(SLOT_SIZE, bytes - off)));
    } catch (err) {
      throw new FerryError('ERR_FERRY_INPUT', `cannot reserve ${bytes} bytes of guest memory: ${(err as Error).message}`);
    }
    return out;
  }

  get buffers(): SharedArrayBuffer[] {
    return this.slots.map((s) => s.buffer as SharedArrayBuffer);
  }

  /**
   * A view of `count` pages from `first`, which must not cross a slot boundary (callers cut runs
   * at multiples of PAGES_PER_SLOT). No copy: the bytes are the guest's own.
   */
  pages(first: number, count: number): Uint8Array {
    const slot = Math.floor(first / PAGES_PER_SLOT);
    const last = first + count - 1;
    if (count < 1 || first < 0 || last >= this.pageCount || Math.floor(last / PAGES_PER_SLOT) !== slot) {
      throw new FerryError('ERR_FERRY_INTERNAL', `page run ${first}+${count} is outside one slot of ${this.pageCount} pages`);
    }
    const start = (first - slot * PAGES_PER_SLOT) * PAGE_SIZE;
    const view = this.slots[slot]!;
    return view.subarray(start, Math.min(start + count * PAGE_SIZE, view.length));
  }

  /** The longest run from `first` of at most `max` pages that stays in one slot. */
  runLimit(first: number, max: number): number {
    const slotEnd = (Math.floor(first / PAGES_PER_SLOT) + 1) * PAGES_PER_SLOT;
    return Math.min(max, slotEnd - first, this.pageCount - first);
  }

  /** Byte offset of a page within the whole of guest memory. */
  static offsetOf(page: number): number {
    return page * PAGE_SIZE;
  }
}
