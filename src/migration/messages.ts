/**
 * The migration engine's messages, carried as typed messages over the encrypted channel. All
 * constants of the engine's wire format are here; docs/migration.md describes the exchange.
 *
 * Control messages are small JSON objects; DATA is binary:
 *
 *   offset 0  u8   space (0 memory pages, 1 disk blocks)
 *          1  u8   reserved, 0
 *          2  u16  run count R (1..MAX_RUNS)
 *          4  u32  pass number
 *          8       the bytes of every data run, in run order (zero runs carry none)
 *   end-12R        R × { u32 first unit, u32 unit count, u32 kind (0 data, 1 zero) }
 *
 * All integers little-endian. The run table comes last so the sender copies guest bytes once,
 * straight into the message, before it knows how many runs there will be. A zero run is a
 * marker: the destination makes those units zero.
 */
import { FerryError } from '../errors.js';

export const ENGINE_VERSION = 1;

export const MSG = {
  /** source → destination: geometry and options (JSON). */
  BEGIN: 1,
  /** destination → source: the geometry matches, send (JSON). */
  BEGIN_OK: 2,
  /** source → destination: pages or blocks (binary, above). */
  DATA: 3,
  /** source → destination: a pass has ended, with its figures (JSON). */
  PASS_END: 4,
  /** source → destination: the workload's device state, sent while the guest is paused (JSON). */
  DEVICE: 5,
  /** source → destination: the counts of everything sent, and the digest when verifying (JSON). */
  COMPLETE: 6,
  /** destination → source: the destination owns and runs the guest (JSON). */
  COMMITTED: 7,
  /** either way: this side gives up; from the destination it also means "not committed, never will be" (JSON). */
  ABORT: 8,
  /**
   * destination → source: everything up to this PASS_END has arrived (JSON). The channel's send
   * window lets the source run far ahead of the link; waiting for this makes a pass last as long
   * as the link takes, so bandwidth, dirty rate and the downtime estimate are the link's.
   */
  PASS_ACK: 9,
  /**
   * source → destination, when verifying: chunk tags of what the source sent (binary: u8 space,
   * u8 0, u16 0, u32 first chunk, then 16 bytes a chunk), all of them, at switch-over before
   * COMPLETE (verify.ts).
   */
  CHUNK_DIGESTS: 10,
  /**
   * source → destination, when verifying: the 32-byte key of this migration's unit and chunk tags
   * (binary, nothing else), right after BEGIN_OK and before any DATA (verify.ts).
   */
  VERIFY_KEY: 11,
} as const;

export const SPACE_MEMORY = 0;
export const SPACE_DISK = 1;
export const RUN_DATA = 0;
export const RUN_ZERO = 1;

export const DATA_HEADER_BYTES = 8;
export const RUN_BYTES = 12;
export const MAX_RUNS = 4096;
/** Payload bytes of one DATA message at most: large enough that per-message costs vanish. */
export const MAX_DATA_BYTES = 1 << 20;
export const MAX_DATA_MESSAGE_BYTES = DATA_HEADER_BYTES + MAX_RUNS * RUN_BYTES + MAX_DATA_BYTES;
/** JSON control messages are small; anything larger is refused before parsing. */
export const MAX_JSON_MESSAGE_BYTES = 64 * 1024;

export interface Begin {
  version: number;
  migrationId: string;
  memoryBytes: number;
  diskBytes: number;
  pageSize: number;
  blockSize: number;
  verify: boolean;
}

export interface BeginOk {
  version: number;
}

export interface PassEnd {
  pass: number;
  pages: number;
  zeroPages: number;
  blocks: number;
  zeroBlocks: number;
}

/** Counts of units sent over the whole migration, per space; checked by the destination. */
export interface SpaceCounts {
  dataUnits: number;
  zeroUnits: number;
  dataBytes: number;
}

export interface Complete {
  passes: number;
  memory: SpaceCounts;
  disk: SpaceCounts;
  dataMessages: number;
  /** Set when verifying: the root of the source's chunk hashes (verify.ts). */
  digest: string | null;
  /** Set when verifying: the scheme and chunk size the root is of. */
  verify?: { algorithm: string; chunkBytes: number };
}

export interface Committed {
  digest: string | null;
}

export interface Abort {
  code: string;
  message: string;
}

export interface Run {
  first: number;
  count: number;
  kind: typeof RUN_DATA | typeof RUN_ZERO;
}

export interface DataMessage {
  space: number;
  pass: number;
  runs: Run[];
  /** The concatenated bytes of the data runs (a view into the payload). */
  data: Uint8Array;
}

export function encodeJson(value: object): Uint8Array {
  return Buffer.from(JSON.stringify(value));
}

export function decodeJson<T>(type: number, payload: Uint8Array): T {
  if (payload.length > MAX_JSON_MESSAGE_BYTES) {
    throw new FerryError('ERR_FERRY_FRAME', `migration message ${type} is ${payload.length} bytes, over ${MAX_JSON_MESSAGE_BYTES}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch {
    throw new FerryError('ERR_FERRY_FRAME', `migration message ${type} is not valid JSON`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new FerryError('ERR_FERRY_FRAME', `migration message ${type} is not a JSON object`);
  }
  return value as T;
}

/** Checks that `value[field]` is a non-negative safe integer (messages from the peer are input). */
export function intField(value: object, field: string, type: number): number {
  const v = (value as Record<string, unknown>)[field];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new FerryError('ERR_FERRY_FRAME', `migration message ${type}: field ${field} must be a non-negative integer`);
  }
  return v;
}

/** The fixed head of a DATA payload, checked against the payload's length. */
export interface DataHeader {
  space: number;
  pass: number;
  runCount: number;
  /** Where the run table starts: DATA_HEADER_BYTES + the data runs' bytes. */
  tableStart: number;
}

const badData = (why: string): FerryError => new FerryError('ERR_FERRY_FRAME', `bad DATA message: ${why}`);

/** Parses the first DATA_HEADER_BYTES of a DATA payload of `length` bytes. */
export function decodeDataHeader(head: Uint8Array, length: number): DataHeader {
  if (length < DATA_HEADER_BYTES + RUN_BYTES || length > MAX_DATA_MESSAGE_BYTES || head.length < DATA_HEADER_BYTES)
    throw badData(`length ${length}`);
  const view = new DataView(head.buffer, head.byteOffset, DATA_HEADER_BYTES);
  const space = view.getUint8(0);
  if (space !== SPACE_MEMORY && space !== SPACE_DISK) throw badData(`space ${space}`);
  if (view.getUint8(1) !== 0) throw badData('reserved byte set');
  const runCount = view.getUint16(2, true);
  const pass = view.getUint32(4, true);
  if (runCount < 1 || runCount > MAX_RUNS) throw badData(`run count ${runCount}`);
  const tableStart = length - runCount * RUN_BYTES;
  if (tableStart < DATA_HEADER_BYTES) throw badData('run table before the data');
  return { space, pass, runCount, tableStart };
}

/**
 * Parses a DATA payload's run table (its last runCount * RUN_BYTES bytes), checking every run
 * against `units` and that the data runs fill the bytes between header and table exactly.
 */
export function decodeRunTable(table: Uint8Array, h: DataHeader, units: number, unitBytes: number): Run[] {
  if (table.length !== h.runCount * RUN_BYTES) throw badData(`run table of ${table.length} bytes for ${h.runCount} runs`);
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const runs: Run[] = [];
  let dataBytes = 0;
  for (let at = 0; at < table.length; at += RUN_BYTES) {
    const first = view.getUint32(at, true);
    const count = view.getUint32(at + 4, true);
    const kind = view.getUint32(at + 8, true);
    if (count < 1 || first + count > units) throw badData(`run ${first}+${count} outside ${units} units`);
    if (kind !== RUN_DATA && kind !== RUN_ZERO) throw badData(`run kind ${kind}`);
    if (kind === RUN_DATA) dataBytes += count * unitBytes;
    runs.push({ first, count, kind });
  }
  if (DATA_HEADER_BYTES + dataBytes !== h.tableStart)
    throw badData(`runs name ${dataBytes} data bytes, payload has ${h.tableStart - DATA_HEADER_BYTES}`);
  return runs;
}

/**
 * Parses a DATA payload, checking its layout against `unitsIn(space)` (the number of units in
 * that space) and `unitBytes(space)`. Nothing is allocated from lengths the peer chose.
 */
export function decodeData(payload: Uint8Array, unitsIn: (space: number) => number, unitBytes: (space: number) => number): DataMessage {
  const h = decodeDataHeader(payload, payload.length);
  const runs = decodeRunTable(payload.subarray(h.tableStart), h, unitsIn(h.space), unitBytes(h.space));
  return { space: h.space, pass: h.pass, runs, data: payload.subarray(DATA_HEADER_BYTES, h.tableStart) };
}

/**
 * Builds DATA messages: the caller adds runs and flushes when `fits` says the next run would not.
 * A data run's bytes are either copied into the builder's reusable buffer (`addData`: disk blocks,
 * read into scratch memory that is reused at once) or referenced where they lie (`addPages`: guest
 * memory, which stays put); `take` then gives the message as one buffer, or as segments — header,
 * the referenced pages, run table — that the channel seals where they lie, with no copy on the
 * sending thread. The wire is the same either way.
 */
export class DataBuilder {
  private readonly buffer = Buffer.allocUnsafe(MAX_DATA_MESSAGE_BYTES);
  private readonly runs: Run[] = [];
  /** The data runs' bytes in order: views of `buffer` (copied) or of guest memory (referenced). */
  private readonly pieces: Uint8Array[] = [];
  private dataBytes = 0;
  private copiedBytes = 0;
  private referenced = false;
  space = SPACE_MEMORY;
  pass = 0;

  get empty(): boolean {
    return this.runs.length === 0;
  }

  fits(bytes: number): boolean {
    return this.runs.length < MAX_RUNS && this.dataBytes + bytes <= MAX_DATA_BYTES;
  }

  /** The size of the message take() would give now. */
  get bytes(): number {
    return DATA_HEADER_BYTES + this.dataBytes + this.runs.length * RUN_BYTES;
  }

  addZero(first: number, count: number): void {
    const last = this.runs[this.runs.length - 1];
    if (last && last.kind === RUN_ZERO && last.first + last.count === first) last.count += count;
    else this.runs.push({ first, count, kind: RUN_ZERO });
  }

  /** A data run whose bytes are copied in now: the caller may reuse `bytes` at once. */
  addData(first: number, count: number, bytes: Uint8Array): void {
    const at = DATA_HEADER_BYTES + this.copiedBytes;
    this.buffer.set(bytes, at);
    this.copiedBytes += bytes.length;
    this.addPiece(this.buffer.subarray(at, at + bytes.length));
    this.addRun(first, count, bytes.length);
  }

  /**
   * A data run whose bytes are read where they lie when the channel seals the message: `view`
   * must stay in place (guest memory does) until the send that carries it is taken. Pages written
   * meanwhile are in the dirty log and go again in a later pass, as with a copy taken earlier.
   */
  addPages(first: number, count: number, view: Uint8Array): void {
    this.referenced = true;
    this.addPiece(view);
    this.addRun(first, count, view.length);
  }

  private addPiece(view: Uint8Array): void {
    const last = this.pieces[this.pieces.length - 1];
    if (last && last.buffer === view.buffer && last.byteOffset + last.length === view.byteOffset) {
      // Adjacent in the same memory: one segment.
      this.pieces[this.pieces.length - 1] = new Uint8Array(view.buffer, last.byteOffset, last.length + view.length);
    } else {
      this.pieces.push(view);
    }
  }

  private addRun(first: number, count: number, length: number): void {
    this.dataBytes += length;
    const last = this.runs[this.runs.length - 1];
    if (last && last.kind === RUN_DATA && last.first + last.count === first) last.count += count;
    else this.runs.push({ first, count, kind: RUN_DATA });
  }

  /**
   * The message so far, and a reset: one buffer when every data run was copied in, else segments.
   * Either way it uses the builder's buffer, so it is valid until the next add.
   */
  take(): Uint8Array | Uint8Array[] {
    const b = this.buffer;
    b.writeUInt8(this.space, 0);
    b.writeUInt8(0, 1);
    b.writeUInt16LE(this.runs.length, 2);
    b.writeUInt32LE(this.pass, 4);
    // The run table follows the copied data (all of the data, when nothing is referenced).
    const tableStart = DATA_HEADER_BYTES + this.copiedBytes;
    let at = tableStart;
    for (const r of this.runs) {
      b.writeUInt32LE(r.first, at);
      b.writeUInt32LE(r.count, at + 4);
      b.writeUInt32LE(r.kind, at + 8);
      at += RUN_BYTES;
    }
    const message = this.referenced ? [b.subarray(0, DATA_HEADER_BYTES), ...this.pieces, b.subarray(tableStart, at)] : b.subarray(0, at);
    this.runs.length = 0;
    this.pieces.length = 0;
    this.dataBytes = 0;
    this.copiedBytes = 0;
    this.referenced = false;
    return message;
  }
}
