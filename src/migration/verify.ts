/**
 * `verify` without the pause: both sides keep tags of what the destination holds, updated as the
 * migration runs, and compare them at switch-over (docs/migration.md, "Verifying a move").
 *
 * Three levels: a keyed tag per unit (memory page, disk block), a tag per 64 KiB chunk over its
 * units' tags (16 pages, or one block), and the root, SHA-256 over a header and every chunk tag.
 * A tag is the AES-256-GCM tag of an empty message whose additional data is the unit, under a key
 * the source draws for this migration alone and sends first, sealed like everything else
 * (crypto/unit-tags.ts): GHASH, a universal hash, under a key the guest never sees. The source marks
 * a unit stale when it sends it (zero markers too) and tags stale units beside the sending, leaving
 * for later those the guest has dirtied again (they will be sent, so tagged, again). The
 * destination marks a unit stale when its write has landed and tags stale units beside the
 * reception. At switch-over each side tags only what is still stale — the last pass, mostly — and
 * the destination compares the source's chunk tags with its own, chunk by chunk. Tagging per unit
 * makes the work what the pages sent weigh: a kv guest's later passes are pages scattered over its
 * memory.
 *
 * Why the source's tags end up those of the bytes it last sent, though it tags a running guest's
 * memory: a write to unit U after U's last tag sets its dirty bit after the write, so a later
 * harvest (the last one at the latest, with the guest paused) sends U again, which marks it stale
 * after its last tag, and every stale unit is tagged at switch-over, paused: a contradiction. So
 * no write falls after a unit's last tag, and that tag is of the paused guest, which is what the
 * last send of the unit carried.
 *
 * Tagging runs on the event loop, yielding every SLICE_CHUNKS chunks. The addon tags a page in
 * under a microsecond, mostly the call; SHA-256 of it through node:crypto took five. A chunk with
 * several units to tag is scanned for zeros first: a zero unit's tag is a constant, computed once.
 */
import { randomBytes, createHash } from 'node:crypto';
import { KEY_BYTES } from '../common/secrets.js';
import { UNIT_TAG_BYTES, UNIT_TAG_IV_BYTES, unitTagger, zeroPages, type UnitTagger } from '../crypto/index.js';
import { FerryError } from '../errors.js';
import { SPACE_DISK, SPACE_MEMORY } from './messages.js';
import type { GuestGeometry } from './types.js';

export const VERIFY_ALGORITHM = 'gcm-tags-units-chunks-v2';
export const CHUNK_BYTES = 64 * 1024;
const HASH_BYTES = UNIT_TAG_BYTES;
/** The tag key's size: an AES-256 key. */
export const VERIFY_KEY_BYTES = KEY_BYTES;
/** The IVs of unit tags and of chunk tags: one key, two domains. */
const UNIT_IV = Buffer.alloc(UNIT_TAG_IV_BYTES);
const CHUNK_IV = Buffer.alloc(UNIT_TAG_IV_BYTES);
CHUNK_IV[0] = 1;
/** A chunk with at least this many units to tag is scanned for zero units first. */
const ZERO_SCAN_UNITS = 4;
/** Chunks hashed between two yields to the event loop: 1 MiB, about a millisecond. */
const SLICE_CHUNKS = 16;
/** Chunk hashes per CHUNK_DIGESTS message: 1 MiB of hashes. */
const HASHES_PER_MESSAGE = 64 * 1024;
const DIGESTS_HEADER_BYTES = 8;

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** One space (memory or disk) cut into chunks, with a hash per chunk and which are stale. */
export interface SpaceSource {
  space: typeof SPACE_MEMORY | typeof SPACE_DISK;
  unitCount: number;
  unitSize: number;
  /** Bytes of units [first, first + count): a view or a copy, read before the next call. */
  read(first: number, count: number): Uint8Array;
  /** Source only: whether any of these units is dirty now (will be sent again). */
  dirty?(first: number, count: number): boolean;
}

export class ChunkLedger {
  readonly unitsPerChunk: number;
  readonly chunkCount: number;
  /** chunkCount × 16 bytes: each chunk's tag (over its units' tags), in order. */
  readonly hashes: Buffer;
  /** unitCount × 16 bytes: each unit's tag. */
  private readonly unitHashes: Buffer;
  /** Units hashed so far, and chunk hashes recomputed. */
  unitsHashed = 0;
  chunksHashed = 0;
  private readonly staleUnits: Uint8Array;
  private readonly staleChunks: Uint8Array;
  private staleList: number[] = [];

  /** The tag of a unit of zeros, and of a partial last unit of zeros when there is one. */
  private readonly zeroTags = new Map<number, Buffer>();

  constructor(
    readonly source: SpaceSource,
    private readonly tagger: UnitTagger,
  ) {
    this.unitsPerChunk = Math.max(1, Math.floor(CHUNK_BYTES / source.unitSize));
    this.chunkCount = Math.ceil(source.unitCount / this.unitsPerChunk);
    this.hashes = Buffer.allocUnsafe(this.chunkCount * HASH_BYTES);
    this.unitHashes = Buffer.allocUnsafe(source.unitCount * HASH_BYTES);
    this.staleUnits = new Uint8Array(source.unitCount);
    this.staleChunks = new Uint8Array(this.chunkCount);
    // Both sides start from a guest of zeros (fresh memory, an emptied disk); pass 1 makes every
    // unit stale anyway. Every full chunk of zeros has the same tag: computed once.
    const zero = this.zeroTag(source.unitSize);
    for (let u = 0; u < source.unitCount; u++) zero.copy(this.unitHashes, u * HASH_BYTES);
    let fullChunk = -1;
    for (let c = 0; c < this.chunkCount; c++) {
      if (this.unitsOf(c)[1] !== this.unitsPerChunk) this.chunkHash(c);
      else if (fullChunk < 0) this.chunkHash((fullChunk = c));
      else this.hashes.copy(this.hashes, c * HASH_BYTES, fullChunk * HASH_BYTES, (fullChunk + 1) * HASH_BYTES);
    }
  }

  get staleCount(): number {
    return this.staleList.length;
  }

  /** Units [first, first + count) were sent (source) or written (destination). */
  markUnits(first: number, count: number): void {
    if (count <= 0) return;
    this.staleUnits.fill(1, first, first + count);
    const last = Math.floor((first + count - 1) / this.unitsPerChunk);
    for (let c = Math.floor(first / this.unitsPerChunk); c <= last; c++) {
      if (this.staleChunks[c]) continue;
      this.staleChunks[c] = 1;
      this.staleList.push(c);
    }
  }

  /**
   * Takes the stale units to hash now, by chunk, no longer stale from here on: a mark after this
   * call makes them stale again. `skipDirty`: leave stale those the guest dirtied again (source,
   * live): they will be sent, so hashed, again.
   */
  takeStale(skipDirty: boolean): Array<[number, number[]]> {
    const taken: Array<[number, number[]]> = [];
    const kept: number[] = [];
    const dirty = skipDirty ? this.source.dirty : undefined;
    for (const c of this.staleList.sort((a, b) => a - b)) {
      const [first, count] = this.unitsOf(c);
      const units: number[] = [];
      let left = false;
      for (let u = first; u < first + count; u++) {
        if (!this.staleUnits[u]) continue;
        if (dirty?.(u, 1)) left = true;
        else {
          this.staleUnits[u] = 0;
          units.push(u);
        }
      }
      if (left) kept.push(c);
      else this.staleChunks[c] = 0;
      if (units.length > 0) taken.push([c, units]);
    }
    this.staleList = kept;
    return taken;
  }

  /** Tags `units` of chunk `c` (each on its own: a pass's scattered pages cost what they weigh), then the chunk. */
  hashUnits(c: number, units: number[]): void {
    const [first, count] = this.unitsOf(c);
    const size = this.source.unitSize;
    const bytes = this.source.read(first, count);
    const scan = units.length >= ZERO_SCAN_UNITS && bytes.length % size === 0;
    const zeros = new Set(scan ? zeroPages(bytes, size) : []);
    // Runs of consecutive units that are not zero, each tagged in one call.
    for (let k = 0; k < units.length;) {
      const u = units[k]!;
      if (zeros.has(u - first)) {
        this.zeroTag(size).copy(this.unitHashes, u * HASH_BYTES);
        k++;
        continue;
      }
      let end = k + 1;
      while (end < units.length && units[end] === u + (end - k) && !zeros.has(units[end]! - first)) end++;
      const data = bytes.subarray((u - first) * size, Math.min((u - first + end - k) * size, bytes.length));
      this.tagger.tagUnits(UNIT_IV, data, size, this.unitHashes.subarray(u * HASH_BYTES, (u + end - k) * HASH_BYTES));
      k = end;
    }
    this.unitsHashed += units.length;
    this.chunkHash(c);
    this.chunksHashed++;
  }

  /** The first unit of chunk `c` and how many it has. */
  unitsOf(c: number): [number, number] {
    const first = c * this.unitsPerChunk;
    return [first, Math.min(this.unitsPerChunk, this.source.unitCount - first)];
  }

  /** Tags chunk `c` over its units' tags, into `hashes`. */
  private chunkHash(c: number): void {
    const [first, count] = this.unitsOf(c);
    const units = this.unitHashes.subarray(first * HASH_BYTES, (first + count) * HASH_BYTES);
    this.tagger.tag(CHUNK_IV, units, this.hashes.subarray(c * HASH_BYTES, (c + 1) * HASH_BYTES));
  }

  private zeroTag(length: number): Buffer {
    let tag = this.zeroTags.get(length);
    if (!tag) {
      tag = Buffer.alloc(HASH_BYTES);
      this.tagger.tag(UNIT_IV, new Uint8Array(length), tag);
      this.zeroTags.set(length, tag);
    }
    return tag;
  }
}

/** Where two sets of chunk hashes first differ: the space, the chunk, and its byte offset in that space. */
export interface ChunkMismatch {
  space: 'memory' | 'disk';
  chunk: number;
  offset: number;
  bytes: number;
}

/** What a verified migration reports (MigrationResult.verification). */
export interface VerifyReport {
  algorithm: string;
  chunkBytes: number;
  memoryChunks: number;
  diskChunks: number;
  /** Chunks whose hashes the destination compared with the source's: all of them, when it got that far. */
  chunksCompared: number;
  /** Chunks this side hashed in all, and those it hashed at switch-over (the part that held the pause). */
  chunksHashed: number;
  chunksHashedAtSwitchOver: number;
  /** Pages and blocks this side hashed in all (each chunk's hash is over its units' hashes). */
  unitsHashed: number;
  /** This side's time hashing at switch-over. */
  switchOverHashMs: number;
  /** The first chunk that differed, or null. */
  mismatch: ChunkMismatch | null;
}

/**
 * Both spaces' ledgers, and the hashing that runs beside the migration: `schedule` takes what is
 * stale now and hashes it in the background, one batch after another, so the newest batch's hash
 * of a chunk is the one that stays; `settle` waits for them and hashes what is still stale.
 */
export class ChunkDigests {
  readonly memory: ChunkLedger;
  readonly disk: ChunkLedger;
  private queue: Promise<void> = Promise.resolve();
  /** Chunks scheduled and not yet hashed. */
  private backlog = 0;
  private failure: unknown = null;
  private stopped = false;
  private atSwitchOver = 0;
  private switchOverMs = 0;
  private readonly tagger: UnitTagger;

  /** `key`: this migration's tag key (VERIFY_KEY_BYTES), copied; the caller wipes its own. */
  constructor(
    memory: SpaceSource,
    disk: SpaceSource,
    private readonly geometry: { memoryBytes: number; diskBytes: number },
    key: Uint8Array,
  ) {
    this.tagger = unitTagger(key);
    this.memory = new ChunkLedger(memory, this.tagger);
    this.disk = new ChunkLedger(disk, this.tagger);
  }

  /** Hashes what is stale now, in the background (skipping what the guest dirtied again, when `skipDirty`). */
  schedule(skipDirty: boolean): void {
    const batch = this.take(skipDirty);
    if (batch.length === 0) return;
    this.backlog += batch.length;
    this.queue = this.queue.then(async () => {
      try {
        for (let i = 0; i < batch.length; i++) {
          if (this.stopped || this.failure) return;
          const [ledger, c, units] = batch[i]!;
          ledger.hashUnits(c, units);
          if (i % SLICE_CHUNKS === SLICE_CHUNKS - 1) await yieldToLoop();
        }
      } catch (err) {
        this.failure = err;
      } finally {
        this.backlog -= batch.length;
      }
    });
  }

  /** Chunks scheduled and not hashed yet. */
  get pending(): number {
    return this.backlog;
  }

  /** Waits until everything scheduled so far is hashed. */
  async idle(): Promise<void> {
    await this.queue;
    this.throwIfFailed();
  }

  /**
   * At switch-over, with nothing writing any more: waits for the background hashing, then hashes
   * every chunk still stale. Returns the root.
   */
  async settle(): Promise<string> {
    await this.idle();
    const t0 = performance.now();
    const batch = this.take(false);
    for (let i = 0; i < batch.length; i++) {
      const [ledger, c, units] = batch[i]!;
      ledger.hashUnits(c, units);
      // Nothing else writes now; yielding keeps the control socket and the channel answering.
      if (i % (SLICE_CHUNKS * 16) === SLICE_CHUNKS * 16 - 1) await yieldToLoop();
    }
    this.atSwitchOver = batch.length;
    this.switchOverMs = performance.now() - t0;
    return this.root();
  }

  /** Ends the background hashing (the migration is over) and wipes the tag key. */
  stop(): void {
    this.stopped = true;
    this.tagger.destroy();
  }

  /** SHA-256 over a header (scheme, sizes, chunk size) and every chunk tag, memory then disk. */
  root(hashes: { memory: Uint8Array; disk: Uint8Array } = { memory: this.memory.hashes, disk: this.disk.hashes }): string {
    const sizes = Buffer.alloc(20);
    sizes.writeBigUInt64LE(BigInt(this.geometry.memoryBytes), 0);
    sizes.writeBigUInt64LE(BigInt(this.geometry.diskBytes), 8);
    sizes.writeUInt32LE(CHUNK_BYTES, 16);
    return createHash('sha256')
      .update(`${VERIFY_ALGORITHM}\0`, 'ascii')
      .update(sizes)
      .update(hashes.memory)
      .update(hashes.disk)
      .digest('hex');
  }

  /** CHUNK_DIGESTS messages carrying every chunk hash, memory then disk. */
  *messages(): Generator<Uint8Array> {
    for (const [space, ledger] of [
      [SPACE_MEMORY, this.memory],
      [SPACE_DISK, this.disk],
    ] as const) {
      for (let first = 0; first < ledger.chunkCount; first += HASHES_PER_MESSAGE) {
        const n = Math.min(HASHES_PER_MESSAGE, ledger.chunkCount - first);
        const out = Buffer.allocUnsafe(DIGESTS_HEADER_BYTES + n * HASH_BYTES);
        out.writeUInt8(space, 0);
        out.writeUInt8(0, 1);
        out.writeUInt16LE(0, 2);
        out.writeUInt32LE(first, 4);
        ledger.hashes.copy(out, DIGESTS_HEADER_BYTES, first * HASH_BYTES, (first + n) * HASH_BYTES);
        yield out;
      }
    }
  }

  report(chunksCompared: number, mismatch: ChunkMismatch | null): VerifyReport {
    return {
      algorithm: VERIFY_ALGORITHM,
      chunkBytes: CHUNK_BYTES,
      memoryChunks: this.memory.chunkCount,
      diskChunks: this.disk.chunkCount,
      chunksCompared,
      chunksHashed: this.memory.chunksHashed + this.disk.chunksHashed,
      unitsHashed: this.memory.unitsHashed + this.disk.unitsHashed,
      chunksHashedAtSwitchOver: this.atSwitchOver,
      switchOverHashMs: Math.round(this.switchOverMs * 10) / 10,
      mismatch,
    };
  }

  private take(skipDirty: boolean): Array<[ChunkLedger, number, number[]]> {
    return [
      ...this.memory.takeStale(skipDirty).map(([c, units]): [ChunkLedger, number, number[]] => [this.memory, c, units]),
      ...this.disk.takeStale(skipDirty).map(([c, units]): [ChunkLedger, number, number[]] => [this.disk, c, units]),
    ];
  }

  private throwIfFailed(): void {
    if (this.failure) throw new FerryError('ERR_FERRY_INTERNAL', `hashing chunks for verify failed: ${(this.failure as Error).message}`);
  }
}

/**
 * The destination's copy of the source's chunk hashes, from its CHUNK_DIGESTS messages (input:
 * checked like any message), and the comparison with its own.
 */
export class SourceChunkHashes {
  private readonly hashes: Record<number, Buffer>;
  private readonly seen: Record<number, Uint8Array>;
  private received = 0;

  constructor(private readonly mine: ChunkDigests) {
    this.hashes = {
      [SPACE_MEMORY]: Buffer.alloc(mine.memory.hashes.length),
      [SPACE_DISK]: Buffer.alloc(mine.disk.hashes.length),
    };
    this.seen = { [SPACE_MEMORY]: new Uint8Array(mine.memory.chunkCount), [SPACE_DISK]: new Uint8Array(mine.disk.chunkCount) };
  }

  accept(payload: Uint8Array): void {
    const bad = (why: string) => new FerryError('ERR_FERRY_FRAME', `bad CHUNK_DIGESTS message: ${why}`);
    if (payload.length < DIGESTS_HEADER_BYTES || (payload.length - DIGESTS_HEADER_BYTES) % HASH_BYTES !== 0) throw bad('length');
    const b = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
    const space = b.readUInt8(0);
    if ((space !== SPACE_MEMORY && space !== SPACE_DISK) || b.readUInt8(1) !== 0 || b.readUInt16LE(2) !== 0) throw bad('header');
    const first = b.readUInt32LE(4);
    const n = (payload.length - DIGESTS_HEADER_BYTES) / HASH_BYTES;
    const seen = this.seen[space]!;
    if (n === 0 || first + n > seen.length) throw bad(`chunks ${first}+${n} outside ${seen.length}`);
    for (let c = first; c < first + n; c++) {
      if (seen[c]) throw bad(`chunk ${c} twice`);
      seen[c] = 1;
    }
    b.copy(this.hashes[space]!, first * HASH_BYTES, DIGESTS_HEADER_BYTES);
    this.received += n;
  }

  /**
   * Checks the source's hashes are all here and are the ones its root names, then compares them
   * with this side's: the first chunk that differs, or null.
   */
  compare(sourceRoot: string): ChunkMismatch | null {
    const total = this.mine.memory.chunkCount + this.mine.disk.chunkCount;
    if (this.received !== total) throw new FerryError('ERR_FERRY_FRAME', `the source sent ${this.received} of ${total} chunk hashes`);
    const theirs = { memory: this.hashes[SPACE_MEMORY]!, disk: this.hashes[SPACE_DISK]! };
    if (this.mine.root(theirs) !== sourceRoot) {
      throw new FerryError('ERR_FERRY_FRAME', 'the source chunk hashes are not those its root names');
    }
    for (const [name, ledger] of [
      ['memory', this.mine.memory],
      ['disk', this.mine.disk],
    ] as const) {
      const other = theirs[name];
      if (other.equals(ledger.hashes)) continue;
      for (let c = 0; c < ledger.chunkCount; c++) {
        const at = c * HASH_BYTES;
        if (other.compare(ledger.hashes, at, at + HASH_BYTES, at, at + HASH_BYTES) !== 0) {
          const [first, count] = ledger.unitsOf(c);
          const size = ledger.source.unitSize;
          return { space: name, chunk: c, offset: first * size, bytes: count * size };
        }
      }
    }
    return null;
  }

  get total(): number {
    return this.received;
  }
}

/** What chunkDigestsOf reads: either side's guest. */
export interface ChunkedGuest extends GuestGeometry {
  memoryPages(first: number, count: number): Uint8Array;
  pageRunLimit(first: number, max: number): number;
  readBlocks(first: number, count: number, into: Uint8Array): Uint8Array;
  pagesDirty?(first: number, count: number): boolean;
  blocksDirty?(first: number, count: number): boolean;
}

/** A fresh tag key: the source draws one per verified migration and sends it as VERIFY_KEY. */
export function newVerifyKey(): Buffer {
  return randomBytes(VERIFY_KEY_BYTES);
}

/**
 * The ledgers of a guest's memory and disk under tag key `key` (copied); `source`: ask its dirty
 * logs what will go again.
 */
export function chunkDigestsOf(g: ChunkedGuest, source: boolean, key: Uint8Array): ChunkDigests {
  const scratch = Buffer.allocUnsafe(Math.max(CHUNK_BYTES, g.blockSize));
  const readPages = (first: number, count: number): Uint8Array => {
    // A chunk lies in one memory slot when the slot is a multiple of it; copy it together otherwise.
    if (g.pageRunLimit(first, count) === count) return g.memoryPages(first, count);
    let at = 0;
    for (let p = first; p < first + count;) {
      const n = g.pageRunLimit(p, first + count - p);
      scratch.set(g.memoryPages(p, n), at);
      at += n * g.pageSize;
      p += n;
    }
    return scratch.subarray(0, at);
  };
  return new ChunkDigests(
    {
      space: SPACE_MEMORY,
      unitCount: g.pageCount,
      unitSize: g.pageSize,
      read: readPages,
      dirty: source && g.pagesDirty ? (f, n) => g.pagesDirty!(f, n) : undefined,
    },
    {
      space: SPACE_DISK,
      unitCount: g.blockCount,
      unitSize: g.blockSize,
      read: (f, n) => g.readBlocks(f, n, scratch),
      dirty: source && g.blocksDirty ? (f, n) => g.blocksDirty!(f, n) : undefined,
    },
    { memoryBytes: g.memoryBytes, diskBytes: g.diskBytes },
    key,
  );
}
