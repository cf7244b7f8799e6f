/**
 * The incremental frame parser (hyperswarm's `_onrawdata`): bytes in any chunking, whole frames
 * out. A frame that lies inside one chunk is handed on as a view of it (no copy); one that spans
 * chunks is gathered into a buffer of exactly its size, allocated only after its header passed
 * every check, so a peer can make it allocate at most one maximum frame at a time.
 */
import { FerryError } from '../errors.js';
import { HEADER_BYTES, frameBytes, parseHeader, type FrameHeader } from './wire.js';

export interface RawFrame {
  header: FrameHeader;
  /** Header and extension: the AAD. */
  aad: Buffer;
  /** Payload, then the tag in encrypted mode. */
  body: Buffer;
  /** Bytes of the whole frame on the wire. */
  wireBytes: number;
  /** The frame was gathered into a buffer of its own (from the pool), not a view of a chunk. */
  gathered: Buffer | null;
  /** The consumer's memory the body was read straight into (plain DATA; `body` views it). */
  target?: Uint8Array;
}

export class FrameDecoder {
  constructor(private readonly allocate: (size: number) => Buffer = (size) => Buffer.allocUnsafe(size)) {}

  private gatheredLast: Buffer | null = null;
  private chunks: Buffer[] = [];
  private offset = 0; // into chunks[0]
  private queued = 0;
  private header: FrameHeader | null = null;
  private failed: FerryError | null = null;

  /** Bytes received and not yet part of a whole frame. */
  get bufferedBytes(): number {
    return this.queued;
  }

  /**
   * Adds bytes; appends every frame they complete to `out`. Throws ERR_FERRY_FRAME on a malformed
   * header, and throws that same error on every later call (the stream cannot be resynchronised).
   */
  push(chunk: Uint8Array, out: RawFrame[]): void {
    if (this.failed) throw this.failed;
    if (chunk.length > 0) {
      this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
      this.queued += chunk.length;
    }
    try {
      for (;;) {
        if (!this.header) {
          if (this.queued < HEADER_BYTES) return;
          this.header = parseHeader(this.peek(HEADER_BYTES));
        }
        const need = frameBytes(this.header);
        if (this.queued < need) return;
        this.gatheredLast = null;
        const frame = this.take(need);
        const aadBytes = HEADER_BYTES + this.header.extensionLength;
        out.push({
          header: this.header,
          aad: frame.subarray(0, aadBytes),
          body: frame.subarray(aadBytes),
          wireBytes: need,
          gathered: this.gatheredLast,
        });
        this.header = null;
      }
    } catch (err) {
      this.failed = err instanceof FerryError ? err : new FerryError('ERR_FERRY_FRAME', `malformed frame: ${(err as Error).message}`);
      this.chunks = [];
      this.queued = 0;
      throw this.failed;
    }
  }

  /** The first n queued bytes, a view when they lie in one chunk. */
  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length - this.offset >= n) return first.subarray(this.offset, this.offset + n);
    return this.gather(n, false);
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length - this.offset >= n) {
      const view = first.subarray(this.offset, this.offset + n);
      this.offset += n;
      this.queued -= n;
      if (this.offset === first.length) {
        this.chunks.shift();
        this.offset = 0;
      }
      return view;
    }
    const frame = this.gather(n, true);
    this.gatheredLast = frame;
    return frame;
  }

  private gather(n: number, consume: boolean): Buffer {
    const out = consume ? this.allocate(n) : Buffer.allocUnsafe(n);
    let filled = 0;
    let i = 0;
    let offset = this.offset;
    while (filled < n) {
      const c = this.chunks[i]!;
      const m = Math.min(n - filled, c.length - offset);
      c.copy(out, filled, offset, offset + m);
      filled += m;
      offset += m;
      if (offset === c.length) {
        i++;
        offset = 0;
      }
    }
    if (consume) {
      this.chunks.splice(0, i);
      this.offset = offset;
      this.queued -= n;
    }
    return out;
  }
}
