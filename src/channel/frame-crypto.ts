/**
 * How this channel's frames are sealed and opened: the key schedule (held for the channel's life,
 * wiped at its end) and each direction's key epochs, the IV of each frame, the mode flag every frame
 * must carry, and the per-epoch budget after which this side's sending moves to the next epoch's key
 * (docs/protocol.md, "Key epochs"). Both directions use it; neither holds key material of its own.
 */
import { FerryError } from '../errors.js';
import type { AeadJob, AeadKey, BatchOptions } from '../crypto/backend.js';
import type { Direction, KeySchedule } from '../crypto/key-schedule.js';
import type { Connection } from './connection.js';
import type { RawFrame } from './decoder.js';
import { EpochKeys } from './epoch-keys.js';
import {
  Flag,
  FrameType,
  HEADER_BYTES,
  IV_BYTES,
  KEY_BUDGET_BYTES,
  KEY_BUDGET_FRAMES,
  MAX_KEY_EPOCH,
  TAG_BYTES,
  rewriteConnection,
  writeHeader,
  writeIv,
  type FrameHeader,
} from './wire.js';

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
  /** The key epoch it is sealed under. */
  epoch: number;
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
  /** The per-epoch budget of sealed bytes (lowered for tests); never above KEY_BUDGET_BYTES. */
  keyBudgetBytes?: number;
  /**
   * This side's sending moved to key epoch `epoch`: every connection that has carried a frame gets
   * a KEY_UPDATE before anything else of the new epoch (called from inside frame(), synchronously).
   */
  onSendEpoch: (epoch: number) => void;
}

/** A job and the key epoch it is sealed (or opened) under. */
export interface EpochJob extends AeadJob {
  epoch: number;
}

/** What abort() keeps to seal its last frames after every other seal and open stopped. */
export interface DetachedKeys {
  readonly keys: EpochKeys;
  destroy(): void;
}

export class FrameCrypto {
  readonly encrypted: boolean;
  private schedule: KeySchedule | null;
  private sendKeys: EpochKeys | null;
  private recvKeys: EpochKeys | null;
  private readonly nonce: Buffer;
  /** What every seal and open of this channel passes to the backend: the thread limit, and the peak it reports. */
  private readonly batchOptions: BatchOptions;
  private readonly budgetBytes: number;
  private readonly onSendEpoch: (epoch: number) => void;
  /** The epoch this side seals under now, and what it sealed in it so far. */
  private epoch = 0;
  private epochBytes = 0;
  private epochFrames = 0;

  /**
   * `schedule` null: a plain channel. `direction`: this side's sending (0 source → destination).
   * `closed` is the error a seal or open after destroy() throws.
   */
  constructor(
    schedule: KeySchedule | null,
    direction: Direction,
    nonce: Uint8Array,
    options: FrameCryptoOptions,
    private readonly closed: () => FerryError,
  ) {
    this.schedule = schedule;
    this.encrypted = schedule !== null;
    this.sendKeys = schedule && new EpochKeys(schedule, direction);
    this.recvKeys = schedule && new EpochKeys(schedule, direction === 0 ? 1 : 0);
    this.nonce = Buffer.from(nonce);
    this.batchOptions = { ...(options.threads === undefined ? {} : { threads: options.threads }), onThreads: options.onThreads };
    this.budgetBytes = Math.min(KEY_BUDGET_BYTES, options.keyBudgetBytes ?? KEY_BUDGET_BYTES);
    this.onSendEpoch = options.onSendEpoch;
  }

  /** False once the key is gone (the channel ended or failed): nothing more is sealed or opened. */
  get live(): boolean {
    return this.schedule !== null;
  }

  /** The epoch this side seals under now. */
  get sendEpoch(): number {
    return this.epoch;
  }

  /** Receiving: the lowest epoch whose frames are still opened; frames of older epochs are refused. */
  get receiveFloor(): number {
    return this.recvKeys?.floor ?? 0;
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

  /**
   * The epoch the next frame of `bytes` is sealed under: the current one while it stays within
   * the budget, else the next (announced on every connection first). ERR_FERRY_LIMIT past the last.
   */
  private reserve(bytes: number): number {
    if (this.epochBytes + bytes > this.budgetBytes || this.epochFrames + 1 > KEY_BUDGET_FRAMES) {
      if (this.epoch >= MAX_KEY_EPOCH) {
        throw new FerryError(
          'ERR_FERRY_LIMIT',
          `all ${MAX_KEY_EPOCH + 1} key epochs of this migration are used up: a new migration key is needed`,
        );
      }
      this.epoch++;
      this.epochBytes = 0;
      this.epochFrames = 0;
      this.onSendEpoch(this.epoch);
    }
    this.epochBytes += bytes;
    this.epochFrames++;
    return this.epoch;
  }

  /** The epoch of a frame about to be framed on `conn` (HELLO and plain frames: 0). */
  private epochFor(conn: Connection, type: FrameType, bytes: number): number {
    if (!this.encrypted || type === FrameType.HELLO) return 0;
    const epoch = this.reserve(bytes);
    conn.sendEpoch = epoch;
    return epoch;
  }

  /** Writes the header of the next frame on `conn` into a buffer of `allocate`, and counts it as the connection's load. */
  frame(conn: Connection, type: FrameType, f: FrameFields, allocate: (size: number) => Buffer = Buffer.allocUnsafe): OutgoingFrame {
    const epoch = this.epochFor(conn, type, f.payloadLength);
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
      epoch,
    });
    conn.assign(buf.length);
    return { buf, sequence, aadBytes, epoch };
  }

  /** A copy of DATA frame `old`'s header for its retransmission on `conn`: a new sequence, and this side's current epoch. */
  reframe(conn: Connection, old: Buffer, payloadLength: number): OutgoingFrame {
    const epoch = this.epochFor(conn, FrameType.DATA, payloadLength);
    const sequence = conn.reserveSequence();
    const buf = Buffer.allocUnsafe(old.length);
    old.copy(buf, 0, 0, HEADER_BYTES);
    rewriteConnection(buf, conn.sendId, sequence, epoch);
    conn.assign(buf.length);
    return { buf, sequence, aadBytes: HEADER_BYTES, epoch };
  }

  iv(connectionId: number, sequence: number): Buffer {
    return writeIv(Buffer.allocUnsafe(IV_BYTES), this.nonce, connectionId, sequence);
  }

  /** Seals (plain: copies) `payload` into frame `f` of connection `connectionId`; `detached` for keys already taken away (abort). */
  async sealOne(f: OutgoingFrame, connectionId: number, payload: Uint8Array, detached?: DetachedKeys | null): Promise<Buffer> {
    if (!this.encrypted) {
      f.buf.set(payload, f.aadBytes);
      return f.buf;
    }
    const keys = detached === undefined ? this.sendKeys : (detached?.keys ?? null);
    if (!keys) throw this.closed();
    const job = {
      iv: this.iv(connectionId, f.sequence),
      aad: f.buf.subarray(0, f.aadBytes),
      input: payload,
      output: f.buf.subarray(f.aadBytes),
    };
    await keys.use(f.epoch, (key) => key.sealBatch([job], this.batchOptions));
    return f.buf;
  }

  /** The payload of HELLO `frame` (plain: as it came); HELLOs are always of epoch 0. */
  async openOne(frame: RawFrame): Promise<Buffer> {
    if (!this.encrypted) return frame.body;
    if (!this.recvKeys) throw this.closed();
    const h = frame.header;
    const out = Buffer.allocUnsafe(h.payloadLength);
    const job = { iv: this.iv(h.connectionId, h.sequence), aad: frame.aad, input: frame.body, output: out };
    await this.recvKeys.use(h.epoch, (key) => key.openBatch([job], this.batchOptions));
    return out;
  }

  /** Callers check `live` first; the budget was reserved when each frame was framed. */
  async sealBatch(jobs: EpochJob[]): Promise<void> {
    if (!this.sendKeys) throw this.closed();
    await this.byEpoch(this.sendKeys, jobs, (key, group) => key.sealBatch(group, this.batchOptions));
  }

  /** Opens the peer's frames; a failed tag rejects with ERR_FERRY_AUTH whose detail names the job. */
  openBatch(jobs: EpochJob[]): Promise<Uint8Array[]> {
    if (!this.recvKeys) return Promise.reject(this.closed());
    return this.byEpoch(this.recvKeys, jobs, (key, group) => key.openBatch(group, this.batchOptions));
  }

  /** Opens frames this side sealed (to seal them again for a retransmission). */
  openSent(jobs: EpochJob[]): Promise<Uint8Array[]> {
    if (!this.sendKeys) return Promise.reject(this.closed());
    return this.byEpoch(this.sendKeys, jobs, (key, group) => key.openBatch(group, this.batchOptions));
  }

  /** Plaintext of a sealed payload of the peer, NOT authenticated (see PlacePayload). */
  peek(epoch: number, iv: Uint8Array, sealed: Uint8Array, offset: number, length: number): Promise<Uint8Array> {
    if (!this.recvKeys) return Promise.reject(this.closed());
    return this.recvKeys.use(epoch, (key) => key.peek(iv, sealed, offset, length));
  }

  /** Sending: no frame of an epoch below `epoch` is sealed or opened again; their keys go. */
  retireSent(epoch: number): void {
    this.sendKeys?.retireBelow(Math.min(epoch, this.epoch));
  }

  /** Receiving: frames of epochs below `epoch` are refused from now on; their keys go. */
  retireReceived(epoch: number): void {
    this.recvKeys?.retireBelow(epoch);
  }

  /** Takes the keys away from every later seal and open; the caller destroys them when done. */
  detach(): DetachedKeys | null {
    const { schedule, sendKeys, recvKeys } = this;
    this.schedule = this.sendKeys = this.recvKeys = null;
    if (!schedule || !sendKeys) return null;
    recvKeys?.destroy();
    return {
      keys: sendKeys,
      destroy: () => {
        sendKeys.destroy();
        schedule.destroy();
      },
    };
  }

  destroy(): void {
    this.detach()?.destroy();
  }

  /** Runs each run of consecutive jobs of one epoch under that epoch's key; results and failed job indexes as one batch. */
  private async byEpoch(
    keys: EpochKeys,
    jobs: EpochJob[],
    run: (key: AeadKey, group: AeadJob[]) => Promise<Uint8Array[]>,
  ): Promise<Uint8Array[]> {
    if (jobs.length > 0 && jobs.every((j) => j.epoch === jobs[0]!.epoch)) return keys.use(jobs[0]!.epoch, (key) => run(key, jobs));
    // Every epoch's key is taken before the first await, so none is retired half-way through.
    const groups: { start: number; jobs: EpochJob[]; held: ReturnType<EpochKeys['acquire']> }[] = [];
    try {
      for (let start = 0; start < jobs.length;) {
        let end = start + 1;
        while (end < jobs.length && jobs[end]!.epoch === jobs[start]!.epoch) end++;
        groups.push({ start, jobs: jobs.slice(start, end), held: keys.acquire(jobs[start]!.epoch) });
        start = end;
      }
    } catch (err) {
      for (const g of groups) g.held.release();
      throw err;
    }
    const out: Uint8Array[] = [];
    try {
      for (const g of groups) {
        try {
          out.push(...(await run(await g.held.key, g.jobs)));
        } catch (err) {
          if (err instanceof FerryError && typeof err.detail?.jobIndex === 'number') {
            // The same error, naming the job by its place in the whole batch; earlier groups' outputs wiped as a failed batch's are.
            for (const o of out) o.fill(0);
            throw new FerryError(err.code, err.message, { detail: { ...err.detail, jobIndex: err.detail.jobIndex + g.start } });
          }
          throw err;
        }
      }
    } finally {
      for (const g of groups) g.held.release();
    }
    return out;
  }
}
