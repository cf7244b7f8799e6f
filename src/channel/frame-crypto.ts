/**
 * How this channel's frames are sealed and opened: the key (held for the channel's life, wiped at
 * its end), the IV of each frame, the mode flag every frame must carry, and the per-key limit on
 * sealed bytes. Both directions use it; neither holds key material of its own.
 */
import { FerryError } from '../errors.js';
import type { AeadJob, AeadKey, BatchOptions } from '../crypto/backend.js';
import type { Connection } from './connection.js';
import type { RawFrame } from './decoder.js';
import { Flag, FrameType, HEADER_BYTES, IV_BYTES, SEAL_LIMIT_BYTES, TAG_BYTES, writeHeader, writeIv, type FrameHeader } from './wire.js';

/** Frames sealed or opened in one backend call, at most; and bytes of payload. */
const BATCH_FRAMES = 64;
const BATCH_BYTES = 16 * 1024 * 1024;

/** Takes the next batch off the front of `queue`: one backend call's worth (at least one item). */
export function takeBatch<T>(queue: T[], length: (t: T) => number): T[] {
  let bytes = 0;
  let n = 0;
  while (n < queue.length && n < BATCH_FRAMES && (n === 0 || bytes + length(queue[n]!) <= BATCH_BYTES)) bytes += length(queue[n++]!);
  return queue.splice(0, n);
}

/** A frame being built for one connection: header written, room left for payload and tag. */
export interface OutgoingFrame {
  buf: Buffer;
  sequence: number;
  aadBytes: number;
}

export interface FrameFields {
  flags?: number;
  messageType?: number;
  messageNumber: number;
  payloadLength: number;
  /** HELLO only: named in the header extension. */
  migrationId?: string;
}

export interface FrameCryptoOptions {
  /** The spec's thread limit for each seal and open; undefined: every core. */
  threads?: number;
  /** Told how many threads each seal or open ran on. */
  onThreads: (threads: number) => void;
  /** Lower the per-key seal limit (tests); never above SEAL_LIMIT_BYTES. */
  sealLimitBytes?: number;
}

export class FrameCrypto {
  readonly encrypted: boolean;
  private key: AeadKey | null;
  private readonly nonce: Buffer;
  /** What every seal and open of this channel passes to the backend: the thread limit, and the peak it reports. */
  private readonly batchOptions: BatchOptions;
  private readonly sealLimit: number;
  private sealedBytes = 0;

  /** `key` null: a plain channel. `closed` is the error a seal or open after destroy() throws. */
  constructor(
    key: AeadKey | null,
    nonce: Uint8Array,
    options: FrameCryptoOptions,
    private readonly closed: () => FerryError,
  ) {
    this.key = key;
    this.encrypted = key !== null;
    this.nonce = Buffer.from(nonce);
    this.batchOptions = { ...(options.threads === undefined ? {} : { threads: options.threads }), onThreads: options.onThreads };
    this.sealLimit = Math.min(SEAL_LIMIT_BYTES, options.sealLimitBytes ?? SEAL_LIMIT_BYTES);
  }

  /** False once the key is gone (the channel ended or failed): nothing more is sealed or opened. */
  get live(): boolean {
    return this.key !== null;
  }

  /** The mode flag must equal the spec's, so nothing on the wire can downgrade the channel. */
  checkMode(h: FrameHeader): FerryError | null {
    if (((h.flags & Flag.ENCRYPTED) !== 0) !== this.encrypted) {
      return new FerryError(
        'ERR_FERRY_REFUSED',
        this.encrypted
          ? 'plain frame on an encrypted channel: refused (no downgrade)'
          : 'encrypted frame on a plain channel: modes disagree',
      );
    }
    return null;
  }

  /** Writes the header of the next frame on `conn` into a buffer of `allocate`, and counts it as the connection's load. */
  frame(conn: Connection, type: FrameType, f: FrameFields, allocate: (size: number) => Buffer = Buffer.allocUnsafe): OutgoingFrame {
    const sequence = conn.reserveSequence();
    const aadBytes = HEADER_BYTES + (f.migrationId?.length ?? 0);
    const buf = allocate(aadBytes + f.payloadLength + (this.encrypted ? TAG_BYTES : 0));
    writeHeader(buf, {
      type,
      flags: (f.flags ?? 0) | (this.encrypted ? Flag.ENCRYPTED : 0),
      messageType: f.messageType ?? 0,
      connectionId: conn.sendId,
      sequence,
      messageNumber: f.messageNumber,
      payloadLength: f.payloadLength,
      migrationId: f.migrationId,
    });
    conn.assign(buf.length);
    return { buf, sequence, aadBytes };
  }

  iv(connectionId: number, sequence: number): Buffer {
    return writeIv(Buffer.allocUnsafe(IV_BYTES), this.nonce, connectionId, sequence);
  }

  /** Counts `bytes` about to be sealed; ERR_FERRY_LIMIT rather than one byte past the per-key limit. */
  count(bytes: number): void {
    this.sealedBytes += bytes;
    if (this.encrypted && this.sealedBytes > this.sealLimit) {
      throw new FerryError(
        'ERR_FERRY_LIMIT',
        `the per-key limit of ${this.sealLimit} sealed bytes is reached: a new migration key is needed`,
      );
    }
  }

  /** Seals (plain: copies) `payload` into frame `f` of connection `connectionId`; `key` for a key already taken away (abort). */
  async sealOne(f: OutgoingFrame, connectionId: number, payload: Uint8Array, key: AeadKey | null = this.key): Promise<Buffer> {
    if (!this.encrypted) {
      f.buf.set(payload, f.aadBytes);
      return f.buf;
    }
    if (!key) throw this.closed();
    this.count(payload.length);
    await key.sealBatch(
      [{ iv: this.iv(connectionId, f.sequence), aad: f.buf.subarray(0, f.aadBytes), input: payload, output: f.buf.subarray(f.aadBytes) }],
      this.batchOptions,
    );
    return f.buf;
  }

  /** The payload of `frame` (plain: as it came). */
  async openOne(frame: RawFrame): Promise<Buffer> {
    if (!this.encrypted) return frame.body;
    if (!this.key) throw this.closed();
    const h = frame.header;
    const out = Buffer.allocUnsafe(h.payloadLength);
    await this.key.openBatch(
      [{ iv: this.iv(h.connectionId, h.sequence), aad: frame.aad, input: frame.body, output: out }],
      this.batchOptions,
    );
    return out;
  }

  /** Callers check `live` first; the jobs' seal limit is counted by them, message by message. */
  async sealBatch(jobs: AeadJob[]): Promise<void> {
    if (!this.key) throw this.closed();
    await this.key.sealBatch(jobs, this.batchOptions);
  }

  /** A failed tag rejects with ERR_FERRY_AUTH whose detail names the job. */
  openBatch(jobs: AeadJob[]): Promise<Uint8Array[]> {
    if (!this.key) return Promise.reject(this.closed());
    return this.key.openBatch(jobs, this.batchOptions);
  }

  /** Plaintext of a sealed payload, NOT authenticated (see PlacePayload). */
  peek(iv: Uint8Array, sealed: Uint8Array, offset: number, length: number): Promise<Uint8Array> {
    if (!this.key) return Promise.reject(this.closed());
    return this.key.peek(iv, sealed, offset, length);
  }

  /** Takes the key away from every later seal and open; the caller destroys it when done with it. */
  detach(): AeadKey | null {
    const key = this.key;
    this.key = null;
    return key;
  }

  destroy(): void {
    this.detach()?.destroy();
  }
}
