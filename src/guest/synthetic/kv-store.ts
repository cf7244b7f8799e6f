/**
 * The kv workload's store: an open-addressing hash table (linear probing) of fixed-size records
 * living in guest memory, so that migrating the memory migrates the data. Records are 128 bytes
 * and aligned, so one record never straddles a page or a slot.
 *
 * Record: u32 used-tag (hash | 1; 0 = empty) | 16-byte key | u32 value length | u32 value
 * checksum (FNV-1a) | 100-byte value. A GET checks the checksum, so a page lost or misplaced by a
 * migration shows up as `corrupt` reads, not only as a digest mismatch.
 */
import type { DirtyLog } from './dirty-log.js';
import { PAGE_SIZE, SLOT_SIZE } from './layout.js';
import type { GuestMemory } from './memory.js';

export const RECORD_BYTES = 128;
export const KEY_BYTES = 16;
export const VALUE_BYTES = 100;
const KEY_AT = 4;
const LEN_AT = 20;
const SUM_AT = 24;
const VALUE_AT = 28;
/** The table takes half the guest's memory, at most 1 GiB (one slot). */
const MAX_TABLE_BYTES = SLOT_SIZE;

export interface KvCounters {
  gets: number;
  sets: number;
  hits: number;
  misses: number;
  corrupt: number;
}

function fnv1a(bytes: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return h >>> 0;
}

export class KvStore {
  readonly capacity: number;
  /** Keys are key:<12 digits> for ids below keyCount: half the capacity (load factor 0.5). */
  readonly keyCount: number;
  readonly counters: KvCounters;
  private readonly table: Uint8Array;
  private readonly view: DataView;
  private readonly key = new Uint8Array(KEY_BYTES);
  private readonly log: DirtyLog;

  constructor(memory: GuestMemory, log: DirtyLog, counters?: KvCounters) {
    const tableBytes = Math.min(MAX_TABLE_BYTES, Math.floor(memory.bytes / 2 / RECORD_BYTES) * RECORD_BYTES);
    this.capacity = tableBytes / RECORD_BYTES;
    this.keyCount = Math.max(1, Math.floor(this.capacity / 2));
    this.table = memory.slots[0]!.subarray(0, tableBytes);
    this.view = new DataView(this.table.buffer, this.table.byteOffset, this.table.byteLength);
    this.log = log;
    this.counters = counters ?? { gets: 0, sets: 0, hits: 0, misses: 0, corrupt: 0 };
  }

  private encodeKey(id: number): void {
    const k = this.key;
    k.set([0x6b, 0x65, 0x79, 0x3a]); // "key:"
    let n = id;
    for (let i = KEY_BYTES - 1; i >= 4; i--) {
      k[i] = 0x30 + (n % 10);
      n = Math.floor(n / 10);
    }
  }

  private keyMatches(at: number): boolean {
    for (let i = 0; i < KEY_BYTES; i++) if (this.table[at + KEY_AT + i] !== this.key[i]) return false;
    return true;
  }

  /** The record offset holding the current key, or the empty one where it would go; -1: table full. */
  private find(): number {
    const hash = fnv1a(this.key, 0, KEY_BYTES) | 1;
    let slot = (hash >>> 0) % this.capacity;
    for (let probes = 0; probes < this.capacity; probes++) {
      const at = slot * RECORD_BYTES;
      const tag = this.view.getUint32(at, true);
      if (tag === 0 || (tag === hash >>> 0 && this.keyMatches(at))) return at;
      slot = slot + 1 === this.capacity ? 0 : slot + 1;
    }
    return -1;
  }

  get(id: number): Uint8Array | null {
    this.encodeKey(id);
    this.counters.gets++;
    const at = this.find();
    if (at < 0 || this.view.getUint32(at, true) === 0) {
      this.counters.misses++;
      return null;
    }
    const len = this.view.getUint32(at + LEN_AT, true);
    if (len > VALUE_BYTES || fnv1a(this.table, at + VALUE_AT, at + VALUE_AT + len) !== this.view.getUint32(at + SUM_AT, true)) {
      this.counters.corrupt++;
      return null;
    }
    this.counters.hits++;
    return this.table.subarray(at + VALUE_AT, at + VALUE_AT + len);
  }

  /** Stores `value` (at most VALUE_BYTES) under key `id`; marks the record's page dirty after writing. */
  set(id: number, value: Uint8Array): boolean {
    this.encodeKey(id);
    this.counters.sets++;
    const at = this.find();
    if (at < 0) return false;
    const hash = (fnv1a(this.key, 0, KEY_BYTES) | 1) >>> 0;
    const len = Math.min(value.length, VALUE_BYTES);
    this.table.set(this.key, at + KEY_AT);
    this.table.set(value.subarray(0, len), at + VALUE_AT);
    this.view.setUint32(at + LEN_AT, len, true);
    this.view.setUint32(at + SUM_AT, fnv1a(this.table, at + VALUE_AT, at + VALUE_AT + len), true);
    this.view.setUint32(at, hash, true);
    this.log.mark(Math.floor(at / PAGE_SIZE));
    return true;
  }
}
