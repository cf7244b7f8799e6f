/**
 * The receive path of a connection: the kernel copies each frame straight to where it belongs.
 *
 * Node's 'data' path costs a fresh 64 KiB buffer per read (allocation, then garbage collection of
 * gigabytes of short-lived external memory) and, for frames larger than a read, one more copy to
 * gather them. Here the socket reads into memory this reader chooses for each read (net.Socket's
 * `onread` with a buffer per read): a frame's header lands in a small staging buffer; once it has
 * passed every check, the rest of the frame is read into its own buffer (from the pool) — or, for a
 * plain DATA frame, into the consumer's memory — so a large frame is never copied in user space.
 * Small frames that arrive together are read in one go into the staging buffer and copied out.
 *
 * The checks and the bound on allocation are the FrameDecoder's: memory for a frame is taken only
 * after its header passed parseHeader, at most one maximum frame at a time.
 */
import type { Socket } from 'node:net';
import { FerryError } from '../errors.js';
import type { RawFrame } from './decoder.js';
import { FrameType, HEADER_BYTES, frameBytes, parseHeader, type FrameHeader } from './wire.js';

const STAGING_BYTES = 64 * 1024;
/** After a DATA frame this large, read the next header on its own so the body can land in place. */
const DIRECT_BYTES = 16 * 1024;

/**
 * Where a frame's body goes, given its checked header: memory of exactly `bodyBytes`, or null for
 * the default (one buffer from `allocate` for the whole frame).
 */
export type BodyTarget = (header: FrameHeader, bodyBytes: number) => Uint8Array | null;

export class FrameReader {
  private readonly staging = Buffer.allocUnsafeSlow(STAGING_BYTES);
  private start = 0;
  private fill = 0;
  /** Large frames are coming: read only up to the end of the next header (then of its frame). */
  private exact = false;
  private header: FrameHeader | null = null;
  /** The frame being read in place: `dest` receives bytes from `destFilled` on. */
  private dest: Buffer | null = null;
  private destFilled = 0;
  private aad: Buffer | null = null;
  private target: Uint8Array | undefined;
  private whole: Buffer | null = null;
  private failed: FerryError | null = null;

  constructor(
    private readonly allocate: (size: number) => Buffer = (size) => Buffer.allocUnsafe(size),
    private readonly bodyTarget?: BodyTarget,
  ) {}

  /** Where the next read must land (never empty). */
  nextBuffer(): Buffer {
    if (this.dest) return this.dest.subarray(this.destFilled);
    if (!this.exact) return this.staging.subarray(this.fill);
    const end = this.header ? this.start + frameBytes(this.header) : this.start + HEADER_BYTES;
    return this.staging.subarray(this.fill, Math.min(STAGING_BYTES, Math.max(end, this.fill + 1)));
  }

  /**
   * `n` bytes landed in the buffer nextBuffer() gave; appends every frame they complete to `out`.
   * Throws ERR_FERRY_FRAME on a malformed header, and that same error on every later call.
   */
  read(n: number, out: RawFrame[]): void {
    if (this.failed) throw this.failed;
    try {
      if (this.dest) {
        this.destFilled += n;
        if (this.destFilled === this.dest.length) this.finishInPlace(out);
        return;
      }
      this.fill += n;
      this.parseStaging(out);
    } catch (err) {
      this.failed = err instanceof FerryError ? err : new FerryError('ERR_FERRY_FRAME', `malformed frame: ${(err as Error).message}`);
      this.dest = null;
      throw this.failed;
    }
  }

  /** Feeds bytes read elsewhere (the router's head, or a socket without onread) as if read here. */
  push(chunk: Uint8Array, out: RawFrame[]): void {
    let off = 0;
    while (off < chunk.length) {
      const into = this.nextBuffer();
      const n = Math.min(into.length, chunk.length - off);
      into.set(chunk.subarray(off, off + n));
      off += n;
      this.read(n, out);
    }
  }

  private parseStaging(out: RawFrame[]): void {
    for (;;) {
      const avail = this.fill - this.start;
      if (!this.header) {
        if (avail < HEADER_BYTES) break;
        this.header = parseHeader(this.staging.subarray(this.start, this.start + HEADER_BYTES));
      }
      const h = this.header;
      const need = frameBytes(h);
      const aadBytes = HEADER_BYTES + h.extensionLength;
      if (avail < need && avail < aadBytes) break; // a HELLO's extension still coming: keep staging
      const target = this.bodyTarget?.(h, need - aadBytes) ?? null;
      const have = Math.min(avail, need);
      const from = this.staging.subarray(this.start, this.start + have);
      if (target) {
        this.aad = Buffer.from(from.subarray(0, aadBytes));
        this.target = target;
        this.whole = null;
        this.dest = Buffer.isBuffer(target) ? target : Buffer.from(target.buffer, target.byteOffset, target.length);
        this.destFilled = have - aadBytes;
        this.dest.set(from.subarray(aadBytes));
      } else {
        this.aad = null;
        this.target = undefined;
        this.whole = this.dest = this.allocate(need);
        this.destFilled = have;
        this.dest.set(from);
      }
      this.start += have;
      if (have < need) {
        // The rest of the frame goes straight into place; staging holds nothing else.
        this.start = this.fill = 0;
        return;
      }
      this.complete(out);
    }
    if (this.start === this.fill) this.start = this.fill = 0;
    else if (this.start > 0) {
      // A header (or a HELLO's extension) still incomplete: move it to the front.
      this.staging.copyWithin(0, this.start, this.fill);
      this.fill -= this.start;
      this.start = 0;
    }
  }

  private finishInPlace(out: RawFrame[]): void {
    this.complete(out);
    this.start = this.fill = 0;
  }

  private complete(out: RawFrame[]): void {
    const h = this.header!;
    const need = frameBytes(h);
    const aadBytes = HEADER_BYTES + h.extensionLength;
    if (this.whole) {
      out.push({
        header: h,
        aad: this.whole.subarray(0, aadBytes),
        body: this.whole.subarray(aadBytes),
        wireBytes: need,
        gathered: this.whole,
      });
    } else {
      out.push({ header: h, aad: this.aad!, body: this.dest!, wireBytes: need, gathered: null, target: this.target });
    }
    // A large DATA frame: expect more, and read the next header alone so its body lands in place.
    if (h.type === FrameType.DATA) this.exact = need >= DIRECT_BYTES;
    this.header = null;
    this.dest = this.whole = this.aad = null;
    this.target = undefined;
    this.destFilled = 0;
  }
}

interface OnreadSymbols {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

let symbols: OnreadSymbols | null | undefined;

/** net.Socket's private slots behind the `onread` option (Node ≥ 12), found on a socket. */
function onreadSymbols(socket: Socket): OnreadSymbols | null {
  if (symbols !== undefined) return symbols;
  const find = (name: string): symbol | undefined => Object.getOwnPropertySymbols(socket).find((s) => s.description === name);
  const buffer = find('kBuffer');
  const callback = find('kBufferCb');
  const generator = find('kBufferGen');
  symbols = buffer && callback && generator ? { buffer, callback, generator } : null;
  return symbols;
}

/**
 * Makes `socket` read straight into the buffers `reader` chooses, calling `onBytes(n)` after each
 * read: what `net.connect({ onread })` does, but also for a socket that exists already (accepted by
 * a server, or handed over by the agent's router). Bytes the socket's stream already buffered are
 * handed to `onChunk` first. Returns false — and changes nothing — where this Node offers no way to
 * do it; the caller then reads 'data' events.
 */
export function readInPlace(socket: Socket, reader: FrameReader, onChunk: (chunk: Buffer) => void, onBytes: (n: number) => void): boolean {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (b: Uint8Array) => void } })._handle;
  const sym = onreadSymbols(socket);
  if (!handle || typeof handle.useUserBuffer !== 'function' || !sym) return false;
  const slots = socket as unknown as Record<symbol, unknown>;
  if (slots[sym.buffer] !== null || slots[sym.generator] !== null) return false;
  for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) onChunk(chunk);
  slots[sym.buffer] = reader.nextBuffer();
  slots[sym.generator] = () => reader.nextBuffer();
  slots[sym.callback] = (n: number) => {
    onBytes(n);
  };
  handle.useUserBuffer(slots[sym.buffer] as Buffer);
  return true;
}
