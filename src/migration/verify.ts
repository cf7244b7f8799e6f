/**
 * `verify` without the pause: both sides keep tags of what the destination holds, updated as the
 * migration runs, and compare them at switch-over (docs/migration.md, "Verifying a move").
 *
 * Three levels: a keyed tag per unit (memory page, disk block), a tag per 64 KiB chunk over its
 * units' tags (16 pages, or one block), and the root, SHA-256 over a header and every chunk tag.
 * A tag is the AES-256-GCM tag of an empty message whose additional data is the unit, under a key
 * the source draws for this migration alone and sends first, sealed like everything else
 * (crypto/unit-tags.ts): GHASH, a universal hash, under a key the guest never sees.
 *
 * Units are tagged as they are handed over, never later: the source tags each run of pages or
 * blocks right after its zero scan, from the bytes the scan read (still in cache; the zero scan's
 * result says which tags are the constant); the destination tags
 * each run once its write has landed, reading it back from guest memory or the disk. So nothing is
 * left to tag at switch-over but the last pass, tagged as it goes, and the work is what the pages
 * sent weigh.
 *
 * Why the source's tags end up those of the bytes it last sent, though it tags a running guest's
 * memory and the seal reads it later still: every send of unit U happens after the harvest that
 * cleared U's dirty bit, and U is tagged within the send. A write to U after that tag sets the
 * bit after the write, so a later harvest (the last one at the latest, with the guest paused) sends
 * U again, and tags it again. So no write falls after a unit's last tag, which read the paused
 * guest's bytes: those the last send of U carried.
 */
import { randomBytes, createHash } from 'node:crypto';
import { KEY_BYTES } from '../common/secrets.js';
import { UNIT_TAG_BYTES, UNIT_TAG_IV_BYTES, unitTagger, zeroPages, zeroPagesUnread, type UnitTagger } from '../crypto/index.js';
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
/** Chunk hashes per CHUNK_DIGESTS message: 1 MiB of hashes. */
const HASHES_PER_MESSAGE = 64 * 1024;
/** Runs of changed chunks this close (256 bytes of tags) go in one CHUNK_DIGESTS message. */
const JOIN_GAP_CHUNKS = 16;
const DIGESTS_HEADER_BYTES = 8;

/** One space (memory or disk) cut into chunks, with a tag per unit and per chunk. */
export interface SpaceSource {
  space: typeof SPACE_MEMORY | typeof SPACE_DISK;
  unitCount: number;
  unitSize: number;
  /** Bytes of units [first, first + count), within one chunk: a view or a copy, read before the next call. */
  read(first: number, count: number): Uint8Array;
  /**
   * The zero units among [first, first + count), as indexes into the range, found the cheapest
   * sound way (memory: pages the kernel never mapped are zero unread). Without it, a 'scan' reads
   * every unit.
   */
  zeros?(first: number, count: number): ArrayLike<number>;
}

/**
 * What a caller knows of the zero units among those it hands over: their indexes into the run
 * (ascending; a zero unit's tag is a constant, computed once), or 'scan' to have them found. Only
 * a shortcut: a unit not listed is tagged from its bytes, whatever they are.
 */
export type KnownZeros = ArrayLike<number> | 'scan';
/** KnownZeros of a run said to hold no zero unit (none to skip: every unit is tagged). */
export const NO_ZEROS: ArrayLike<number> = new Uint32Array(0);

export class ChunkLedger {
  readonly unitsPerChunk: number;
  readonly chunkCount: number;
  /** chunkCount × 16 bytes: each chunk's tag (over its units' tags), in order, as of the last flush. */
  readonly hashes: Buffer;
  /** unitCount × 16 bytes: each unit's tag. */
  private readonly unitHashes: Buffer;
  /** Units tagged so far, and chunk tags recomputed. */
  unitsHashed = 0;
  chunksHashed = 0;
  /** Chunks whose units changed since their tag was last computed (flush computes them). */
  private readonly staleChunks: Uint8Array;
  /** Those chunks, in the order they went stale: staleList[0, staleCount). */
  private readonly staleList: Uint32Array;
  private staleCount = 0;
  /** Chunks whose tag was computed since it was last handed out (takeUnsent). */
  private readonly unsentChunks: Uint8Array;

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
    this.staleChunks = new Uint8Array(this.chunkCount);
    this.unsentChunks = new Uint8Array(this.chunkCount);
    // Both sides start from a guest of zeros (fresh memory, an emptied disk); pass 1 tags every
    // unit anyway. The zero tag, doubled across the buffer, then every chunk's tag at once.
    if (source.unitCount > 0) {
      this.zeroTag(source.unitSize).copy(this.unitHashes, 0);
      for (let have = HASH_BYTES; have < this.unitHashes.length; have *= 2) this.unitHashes.copyWithin(have, 0, have);
    }
    this.staleList = new Uint32Array(this.chunkCount);
    for (let c = 0; c < this.chunkCount; c++) this.markStale(c);
    this.flush();
    this.chunksHashed = 0;
  }

  /**
   * Units [first, first + count) hold new bytes (sent, at the source; landed, at the destination):
   * tags them, then every chunk they touch. `bytes`: theirs, in order, or null to read them from
   * the space; `zeros`: what the caller knows of the zero ones among them.
   */
  update(first: number, count: number, bytes: Uint8Array | null, zeros: KnownZeros): void {
    if (count <= 0) return;
    if (zeros === 'scan' && this.source.zeros) zeros = this.source.zeros(first, count);
    const size = this.source.unitSize;
    const per = this.unitsPerChunk;
    const end = first + count;
    let z = 0;
    for (let c = Math.floor(first / per); c * per < end; c++) {
      const a = Math.max(first, c * per);
      const b = Math.min(end, (c + 1) * per, this.source.unitCount);
      const data = bytes ? bytes.subarray((a - first) * size, Math.min((b - first) * size, bytes.length)) : this.source.read(a, b - a);
      let known: ArrayLike<number> = NO_ZEROS;
      let offset = 0;
      if (zeros === 'scan') {
        if (b - a >= ZERO_SCAN_UNITS && data.length % size === 0) known = zeroPages(data, size);
      } else {
        // The caller's indexes are into the whole run: skip to this chunk's.
        while (z < zeros.length && zeros[z]! < a - first) z++;
        known = zeros;
        offset = a - first;
      }
      this.tagRange(a, b, data, known, z, offset);
      this.markStale(c);
    }
  }

  /**
   * Computes the tag of every chunk whose units changed since, all in one call (a chunk's tag is
   * over its units' tags: the chunks are 256-byte units of the unit tags, tagged where they lie).
   */
  flush(): void {
    if (this.staleCount === 0) return;
    const stale = this.staleList.subarray(0, this.staleCount);
    this.tagger.tagUnitsAt(CHUNK_IV, this.unitHashes, this.unitsPerChunk * HASH_BYTES, stale, this.hashes);
    for (const c of stale) {
      this.staleChunks[c] = 0;
      this.unsentChunks[c] = 1;
    }
    this.chunksHashed += this.staleCount;
    this.staleCount = 0;
  }

  private markStale(c: number): void {
    if (this.staleChunks[c] === 1) return;
    this.staleChunks[c] = 1;
    this.staleList[this.staleCount++] = c;
  }

  /** Tags units [a, b) from `data` (theirs), the ones `zeros` lists from index `z` on (minus `offset`) as zero. */
  private tagRange(a: number, b: number, data: Uint8Array, zeros: ArrayLike<number>, z: number, offset: number): void {
    const size = this.source.unitSize;
    for (let u = a; u < b;) {
      const i = u - a;
      if (z < zeros.length && zeros[z]! - offset === i) {
        this.zeroTag(size).copy(this.unitHashes, u * HASH_BYTES);
        z++;
        u++;
        continue;
      }
      // A run of units up to the next zero one (or the end), tagged in one call.
      const next = z < zeros.length ? Math.min(b, a + zeros[z]! - offset) : b;
      const run = data.subarray(i * size, Math.min((next - a) * size, data.length));
      this.tagger.tagUnits(UNIT_IV, run, size, this.unitHashes.subarray(u * HASH_BYTES, next * HASH_BYTES));
      u = next;
    }
    this.unitsHashed += b - a;
  }

  /**
   * The runs of chunks whose tag was computed since the last call (every chunk, the first time),
   * as [first, count], each at most `max` chunks; runs apart by at most `gap` unchanged chunks are
   * joined (a tag sent again costs less than a message more). Marks them handed out.
   */
  *takeUnsent(max: number, gap: number): Generator<[number, number]> {
    const unsent = this.unsentChunks;
    for (let c = unsent.indexOf(1); c !== -1 && c < this.chunkCount;) {
      let end = c + 1; // one past the last unsent chunk of the run
      for (let next = end; next < this.chunkCount && next - c < max && next - end <= gap; next++) {
        if (unsent[next] === 1) end = next + 1;
      }
      unsent.fill(0, c, end);
      yield [c, end - c];
      c = unsent.indexOf(1, end);
    }
  }

  /** The first unit of chunk `c` and how many it has. */
  unitsOf(c: number): [number, number] {
    const first = c * this.unitsPerChunk;
    return [first, Math.min(this.unitsPerChunk, this.source.unitCount - first)];
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
 * Both spaces' ledgers under one tagger, tagging as units are handed over (update), and the figures
 * of the part that fell in the switch-over: what was tagged since `mark`.
 */
export class ChunkDigests {
  readonly memory: ChunkLedger;
  readonly disk: ChunkLedger;
  private stopped = false;
  /** The latest two marks: chunks tagged and tagging time so far, then. */
  private readonly marks: Array<{ chunks: number; ms: number }> = [];
  private msTotal = 0;
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

  /** Units of `space` hold new bytes (ChunkLedger.update); nothing once stopped. */
  update(space: number, first: number, count: number, bytes: Uint8Array | null, zeros: KnownZeros): void {
    if (this.stopped) return;
    const t0 = performance.now();
    (space === SPACE_MEMORY ? this.memory : this.disk).update(first, count, bytes, zeros);
    this.msTotal += performance.now() - t0;
  }

  /**
   * Brings the chunk tags up to date, and notes where the switch-over may begin: both sides mark at
   * each pass's end, the source at its pause too.
   */
  mark(): void {
    this.flush();
    this.marks.push({ chunks: this.chunksHashed, ms: this.msTotal });
    if (this.marks.length > 2) this.marks.shift();
  }

  /**
   * At switch-over, every unit handed over already tagged: the root. What was tagged since mark
   * `back` is the part that held the pause: the source's latest (its pause), the destination's one
   * before the latest (its latest is the last pass's end).
   */
  settle(back: 1 | 2 = 1): string {
    this.flush();
    const from = this.marks[this.marks.length - back] ?? { chunks: 0, ms: 0 };
    this.atSwitchOver = this.chunksHashed - from.chunks;
    this.switchOverMs = this.msTotal - from.ms;
    return this.root();
  }

  /** Both ledgers' chunk tags brought up to date (ChunkLedger.flush), timed. */
  private flush(): void {
    if (this.stopped) return;
    const t0 = performance.now();
    this.memory.flush();
    this.disk.flush();
    this.msTotal += performance.now() - t0;
  }

  /** Ends the tagging (the migration is over) and wipes the tag key. */
  stop(): void {
    this.stopped = true;
    this.tagger.destroy();
  }

  private get chunksHashed(): number {
    return this.memory.chunksHashed + this.disk.chunksHashed;
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

  /**
   * CHUNK_DIGESTS messages carrying the chunk tags computed since the last call (every one, the
   * first time), memory then disk: the source sends them after each mark, so the pause carries
   * only what the last pass changed.
   */
  *messages(): Generator<Uint8Array> {
    for (const [space, ledger] of [
      [SPACE_MEMORY, this.memory],
      [SPACE_DISK, this.disk],
    ] as const) {
      for (const [first, n] of ledger.takeUnsent(HASHES_PER_MESSAGE, JOIN_GAP_CHUNKS)) {
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
      chunksHashed: this.chunksHashed,
      unitsHashed: this.memory.unitsHashed + this.disk.unitsHashed,
      chunksHashedAtSwitchOver: this.atSwitchOver,
      switchOverHashMs: Math.round(this.switchOverMs * 10) / 10,
      mismatch,
    };
  }
}

/**
 * The destination's copy of the source's chunk hashes, from its CHUNK_DIGESTS messages (input:
 * checked like any message), and the comparison with its own. A chunk's later tag replaces its
 * earlier one (the source sends what each pass changed); by COMPLETE every chunk must have one.
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
      if (seen[c]) continue;
      seen[c] = 1;
      this.received++;
    }
    b.copy(this.hashes[space]!, first * HASH_BYTES, DIGESTS_HEADER_BYTES);
  }

  /**
   * Checks the source's hashes are all here and are the ones its root names, then compares them
   * with this side's (whose root is `mineRoot`, when the caller has it): the first chunk that
   * differs, or null.
   */
  compare(sourceRoot: string, mineRoot?: string): ChunkMismatch | null {
    const total = this.mine.memory.chunkCount + this.mine.disk.chunkCount;
    if (this.received !== total) throw new FerryError('ERR_FERRY_FRAME', `the source sent ${this.received} of ${total} chunk hashes`);
    const theirs = { memory: this.hashes[SPACE_MEMORY]!, disk: this.hashes[SPACE_DISK]! };
    // Equal tags have equal roots: this side's own (`mineRoot`, from settle) stands for theirs, one
    // SHA-256 fewer in the pause.
    const same = theirs.memory.equals(this.mine.memory.hashes) && theirs.disk.equals(this.mine.disk.hashes);
    if ((same && mineRoot !== undefined ? mineRoot : this.mine.root(theirs)) !== sourceRoot) {
      throw new FerryError('ERR_FERRY_FRAME', 'the source chunk hashes are not those its root names');
    }
    if (same) return null;
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
}

/** A fresh tag key: the source draws one per verified migration and sends it as VERIFY_KEY. */
export function newVerifyKey(): Buffer {
  return randomBytes(VERIFY_KEY_BYTES);
}

/** The ledgers of a guest's memory and disk under tag key `key` (copied). */
export function chunkDigestsOf(g: ChunkedGuest, key: Uint8Array): ChunkDigests {
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
  const memoryZeros = (first: number, count: number): ArrayLike<number> => {
    let found: ArrayLike<number> | null = null;
    const parts: number[] = [];
    for (let p = first; p < first + count;) {
      const n = g.pageRunLimit(p, first + count - p);
      const zeros = zeroPagesUnread(g.memoryPages(p, n), g.pageSize);
      if (p === first && n === count) found = zeros;
      else for (const z of zeros as Uint32Array) parts.push(z + p - first);
      p += n;
    }
    return found ?? parts;
  };
  return new ChunkDigests(
    {
      space: SPACE_MEMORY,
      unitCount: g.pageCount,
      unitSize: g.pageSize,
      read: readPages,
      zeros: memoryZeros,
    },
    {
      space: SPACE_DISK,
      unitCount: g.blockCount,
      unitSize: g.blockSize,
      read: (f, n) => g.readBlocks(f, n, scratch),
    },
    { memoryBytes: g.memoryBytes, diskBytes: g.diskBytes },
    key,
  );
}
