/**
 * The sending half of a channel: messages are admitted while the peer's window has room, numbered,
 * sealed in batches on the least loaded connections and kept until the peer acknowledges them;
 * what a lost connection carried is sealed again for another (a new IV). END goes after the last
 * message, and end() resolves once the peer acknowledged it.
 */
import { FerryError, toFerryError } from '../errors.js';
import { inputLength } from '../crypto/backend.js';
import type { ChannelStats } from './types.js';
import type { Connection } from './connection.js';
import type { FramePool } from './frame-pool.js';
import { takeBatch, type EpochJob, type FrameCrypto } from './frame-crypto.js';
import { FrameType, HEADER_BYTES, MAX_PAYLOAD_BYTES, MIN_WINDOW_BYTES } from './wire.js';

/** Plain batches smaller than this are copied into their frames on the calling thread. */
const POOL_COPY_MIN_BYTES = 64 * 1024;

/** What sending takes from the rest of the channel. */
export interface SenderHost {
  readonly error: FerryError | null;
  fail(err: FerryError): void;
  /** The usable connection with the least queued; null while there is none. */
  pickConnection(): Connection | null;
  /** Seals a control frame (END) and queues it on `conn`. */
  sendEnd(conn: Connection, total: number): Promise<void>;
  /** Something changed that may finish the channel. */
  checkDone(): void;
}

export interface SenderOptions {
  windowBytes: number;
  /** Copies pairs (flat[2i+1] into flat[2i]) off the event loop; see ChannelOptions.copy. */
  copy: ((flat: Uint8Array[]) => Promise<void>) | null;
}

interface OutMessage {
  number: number;
  payloadLength: number;
  /** The frame as last sealed, header included; kept until acknowledged. */
  frame: Buffer;
  conn: Connection | null;
  sequence: number;
  /** The key epoch `frame` is sealed under: its key stays until the message is acknowledged or sealed again. */
  epoch: number;
  /** Sent again: its first buffer may sit in a dead socket's queue, so none of its buffers is reused. */
  retransmitted?: boolean;
}

interface PendingSend {
  number: number;
  type: number;
  /** One buffer, or segments sent as one message (see Channel.send). */
  payload: Uint8Array | readonly Uint8Array[];
  length: number;
  resolve: () => void;
  reject: (e: FerryError) => void;
}

interface AdmitWaiter {
  bytes: number;
  go: () => void;
  fail: (e: FerryError) => void;
}

export class Sender {
  private readonly windowBytes: number;
  private readonly copy: ((flat: Uint8Array[]) => Promise<void>) | null;
  private nextNumber = 0;
  private inflightBytes = 0;
  private peerWindow = MIN_WINDOW_BYTES;
  private readonly admitQueue: AdmitWaiter[] = [];
  private sealQueue: PendingSend[] = [];
  /** Sent and not acknowledged, in number order from `unackedHead` (a queue without O(n) shifts). */
  private readonly unacked: OutMessage[] = [];
  private unackedHead = 0;
  private retransmitQueue: OutMessage[] = [];
  private peerAcked = 0;
  private peerSawEnd = false;
  private endRequested = false;
  private endConn: Connection | null = null;
  private readonly endWaiters: { resolve: () => void; reject: (e: FerryError) => void }[] = [];
  private pumping = false;
  private pumpAgain = false;
  /** Unacknowledged messages per key epoch they are sealed under: an epoch's key goes when its count does. */
  private readonly unackedByEpoch = new Map<number, number>();

  constructor(
    private readonly host: SenderHost,
    private readonly crypto: FrameCrypto,
    private readonly pool: FramePool,
    private readonly stats: ChannelStats,
    options: SenderOptions,
  ) {
    this.windowBytes = options.windowBytes;
    this.copy = options.copy;
  }

  /** Messages numbered so far: a peer's HELLO may not resume beyond them. */
  get numbered(): number {
    return this.nextNumber;
  }

  send(type: number, payload: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (this.host.error) return Promise.reject(this.host.error);
    if (!Number.isInteger(type) || type < 0 || type > 255) {
      return Promise.reject(new FerryError('ERR_FERRY_INPUT', `message type must be 0-255; got ${type}`));
    }
    if (Array.isArray(payload) && payload.every((p) => p instanceof Uint8Array)) {
      // Copied: the caller may reuse its array at once; the bytes themselves must stay until taken.
      payload = [...(payload as readonly Uint8Array[])];
    } else if (!(payload instanceof Uint8Array)) {
      return Promise.reject(new FerryError('ERR_FERRY_INPUT', 'payload must be a Uint8Array or an array of them'));
    }
    const length = inputLength(payload);
    if (length > MAX_PAYLOAD_BYTES) {
      return Promise.reject(
        new FerryError('ERR_FERRY_INPUT', `message of ${length} bytes exceeds the ${MAX_PAYLOAD_BYTES}-byte maximum: split it`),
      );
    }
    if (this.endRequested) return Promise.reject(new FerryError('ERR_FERRY_INPUT', 'send after end()'));
    const parts = payload;
    return new Promise<void>((resolve, reject) => {
      const admit = (): void => {
        this.inflightBytes += length;
        this.sealQueue.push({ number: this.nextNumber++, type, payload: parts, length, resolve, reject });
        this.schedulePump();
      };
      if (this.admitQueue.length === 0 && this.fits(length)) admit();
      else this.admitQueue.push({ bytes: length, go: admit, fail: reject });
    });
  }

  end(): Promise<void> {
    if (this.host.error) return Promise.reject(this.host.error);
    this.endRequested = true;
    const done = new Promise<void>((resolve, reject) => this.endWaiters.push({ resolve, reject }));
    this.schedulePump();
    this.host.checkDone();
    return done;
  }

  /** A connection opened: the peer's window, and the point its HELLO resumes from (what it already has). */
  connected(peerWindow: number, resumeAt: number): void {
    this.peerWindow = peerWindow;
    this.onAck(resumeAt, false);
    this.drainAdmit();
    this.schedulePump();
  }

  onAck(count: number, endSeen: boolean): void {
    if (count > this.nextNumber) {
      this.host.fail(new FerryError('ERR_FERRY_SEQUENCE', `the peer acknowledged ${count} messages; only ${this.nextNumber} were sent`));
      return;
    }
    if (endSeen && !this.endRequested) {
      this.host.fail(new FerryError('ERR_FERRY_SEQUENCE', 'the peer acknowledged an END that was never sent'));
      return;
    }
    if (count > this.peerAcked) {
      this.peerAcked = count;
      while (this.unackedHead < this.unacked.length && this.unacked[this.unackedHead]!.number < count) {
        const m = this.unacked[this.unackedHead++]!;
        this.inflightBytes -= m.payloadLength;
        this.stats.bytesAcknowledged += m.payloadLength;
        this.countEpoch(m.epoch, -1);
        // Acknowledged: the peer has every byte, so no write of this buffer can still be pending.
        if (!m.retransmitted) this.pool.give(m.frame);
      }
      if (this.unackedHead > 1024 && this.unackedHead * 2 > this.unacked.length) {
        this.unacked.splice(0, this.unackedHead);
        this.unackedHead = 0;
      }
      this.retransmitQueue = this.retransmitQueue.filter((m) => m.number >= count);
      this.retireEpochs();
      this.drainAdmit();
    }
    if (endSeen) this.peerSawEnd = true;
    this.host.checkDone();
  }

  /** Our END acknowledged, with every message before it: resolves end() and says so. */
  settleEnd(): boolean {
    const done =
      this.endRequested &&
      this.sealQueue.length === 0 &&
      this.admitQueue.length === 0 &&
      this.peerAcked === this.nextNumber &&
      this.peerSawEnd;
    if (done) for (const w of this.endWaiters.splice(0)) w.resolve();
    return done;
  }

  /** Payload bytes waiting to be sent again (what lost connections carried unacknowledged). */
  get resendBytes(): number {
    let n = 0;
    for (const m of this.retransmitQueue) n += m.payloadLength;
    return n;
  }

  /** Everything a lost connection carried that the peer has not acknowledged goes again elsewhere. */
  requeue(conn: Connection): void {
    for (let i = this.unackedHead; i < this.unacked.length; i++) if (this.unacked[i]!.conn === conn) this.queueRetransmit(this.unacked[i]!);
    this.retransmitQueue.sort((a, b) => a.number - b.number);
    if (this.endConn === conn) this.endConn = null;
    this.schedulePump();
  }

  fail(err: FerryError): void {
    for (const w of this.admitQueue.splice(0)) w.fail(err);
    for (const s of this.sealQueue.splice(0)) s.reject(err);
    for (const w of this.endWaiters.splice(0)) w.reject(err);
    this.unacked.length = 0;
    this.unackedHead = 0;
    this.retransmitQueue = [];
    this.unackedByEpoch.clear();
  }

  private countEpoch(epoch: number, by: 1 | -1): void {
    const n = (this.unackedByEpoch.get(epoch) ?? 0) + by;
    if (n === 0) this.unackedByEpoch.delete(epoch);
    else this.unackedByEpoch.set(epoch, n);
  }

  /** Keys of epochs below the current one that no unacknowledged message is sealed under are not needed again. */
  private retireEpochs(): void {
    if (!this.crypto.encrypted) return;
    let oldest = this.crypto.sendEpoch;
    for (const e of this.unackedByEpoch.keys()) if (e < oldest) oldest = e;
    this.crypto.retireSent(oldest);
  }

  private fits(bytes: number): boolean {
    return this.inflightBytes === 0 || this.inflightBytes + bytes <= Math.min(this.peerWindow, this.windowBytes);
  }

  private drainAdmit(): void {
    while (this.admitQueue.length > 0 && !this.host.error && this.fits(this.admitQueue[0]!.bytes)) this.admitQueue.shift()!.go();
  }

  schedulePump(): void {
    if (this.host.error) return;
    if (this.pumping) {
      // Asked again while running (end(), a new connection): go round once more when done.
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    this.pumpAgain = false;
    queueMicrotask(() => {
      this.pump().then(
        () => {
          this.pumping = false;
          const more = this.retransmitQueue.length > 0 || this.sealQueue.length > 0;
          if (this.pumpAgain || (more && this.host.pickConnection())) this.schedulePump();
        },
        (err) => {
          this.pumping = false;
          this.host.fail(toFerryError(err, 'ERR_FERRY_INTERNAL'));
        },
      );
    });
  }

  private async pump(): Promise<void> {
    while (!this.host.error && this.host.pickConnection()) {
      if (this.retransmitQueue.length > 0) await this.retransmitBatch();
      else if (this.sealQueue.length > 0) await this.sealBatch();
      else break;
    }
    if (
      !this.host.error &&
      this.endRequested &&
      this.admitQueue.length === 0 &&
      this.sealQueue.length === 0 &&
      this.retransmitQueue.length === 0 &&
      !this.endConn
    ) {
      const conn = this.host.pickConnection();
      if (conn && !this.peerSawEnd) {
        this.endConn = conn;
        await this.host.sendEnd(conn, this.nextNumber);
      }
    }
  }

  private async sealBatch(): Promise<void> {
    const batch = takeBatch(this.sealQueue, (s) => s.length);
    try {
      await this.sealTaken(batch);
    } catch (err) {
      this.host.fail(toFerryError(err, 'ERR_FERRY_INTERNAL'));
    }
    // Whatever stopped this batch half-way (a failure meanwhile) is what its senders hear.
    if (this.host.error) for (const s of batch) s.reject(this.host.error);
  }

  private async sealTaken(batch: PendingSend[]): Promise<void> {
    const { crypto } = this;
    const jobs: EpochJob[] = [];
    const copies: Uint8Array[] = [];
    let copyBytes = 0;
    const built = batch.map((s) => {
      const conn = this.host.pickConnection()!;
      const f = crypto.frame(conn, FrameType.DATA, { messageType: s.type, messageNumber: s.number, payloadLength: s.length }, (size) =>
        this.pool.take(size),
      );
      if (crypto.encrypted) {
        // Segments are sealed where they lie (the seal gathers them): no copy on this thread.
        jobs.push({
          epoch: f.epoch,
          iv: crypto.iv(conn.sendId, f.sequence),
          aad: f.buf.subarray(0, HEADER_BYTES),
          input: s.payload,
          output: f.buf.subarray(HEADER_BYTES),
        });
      } else {
        let at = HEADER_BYTES;
        for (const part of s.payload instanceof Uint8Array ? [s.payload] : s.payload) {
          copies.push(f.buf.subarray(at, at + part.length), part);
          at += part.length;
        }
        copyBytes += s.length;
      }
      return { s, conn, f };
    });
    if (jobs.length > 0) {
      if (!crypto.live) return;
      await crypto.sealBatch(jobs);
    }
    // Plain: as the seal would, off the event loop when the batch is worth the pool's round trip.
    if (this.copy && copyBytes >= POOL_COPY_MIN_BYTES) await this.copy(copies);
    else for (let i = 0; i < copies.length; i += 2) copies[i]!.set(copies[i + 1]!);
    if (this.host.error) return;
    for (const { s, conn, f } of built) {
      const msg: OutMessage = { number: s.number, payloadLength: s.length, frame: f.buf, conn, sequence: f.sequence, epoch: f.epoch };
      this.unacked.push(msg);
      this.countEpoch(msg.epoch, 1);
      this.stats.bytesSent += msg.payloadLength;
      this.stats.messagesSent++;
      if (conn.state === 'closed') this.queueRetransmit(msg);
      else conn.put(f.sequence, f.buf, msg.payloadLength);
      s.resolve();
    }
  }

  private queueRetransmit(msg: OutMessage): void {
    msg.conn = null;
    this.retransmitQueue.push(msg);
  }

  /** Re-seals unacknowledged messages for a new connection and sequence (a new IV). */
  private async retransmitBatch(): Promise<void> {
    const { crypto } = this;
    const batch = takeBatch(this.retransmitQueue, (m) => m.payloadLength);
    const plain = batch.map((m) => (crypto.encrypted ? Buffer.allocUnsafe(m.payloadLength) : m.frame.subarray(HEADER_BYTES)));
    if (crypto.encrypted) {
      if (!crypto.live) return;
      await crypto.openSent(
        batch.map((m, i) => ({
          epoch: m.epoch,
          iv: crypto.iv(m.frame.readUInt32BE(4), m.sequence),
          aad: m.frame.subarray(0, HEADER_BYTES),
          input: m.frame.subarray(HEADER_BYTES),
          output: plain[i],
        })),
      );
    }
    if (this.host.error) return;
    if (!this.host.pickConnection()) {
      // Every connection went while the batch was being opened: it waits for the next one.
      if (crypto.encrypted) for (const p of plain) p.fill(0);
      this.retransmitQueue = [...batch, ...this.retransmitQueue].sort((a, b) => a.number - b.number);
      return;
    }
    const jobs: EpochJob[] = [];
    const moved = batch.map((m, i) => {
      const conn = this.host.pickConnection()!;
      // Sealed again under this side's current epoch, whatever it was sealed under before.
      const { buf: frame, sequence, epoch } = crypto.reframe(conn, m.frame, m.payloadLength);
      if (crypto.encrypted) {
        jobs.push({
          epoch,
          iv: crypto.iv(conn.sendId, sequence),
          aad: frame.subarray(0, HEADER_BYTES),
          input: plain[i]!,
          output: frame.subarray(HEADER_BYTES),
        });
      } else {
        plain[i]!.copy(frame, HEADER_BYTES);
      }
      return { m, conn, sequence, frame, epoch };
    });
    if (jobs.length > 0 && crypto.live) await crypto.sealBatch(jobs);
    if (crypto.encrypted) for (const p of plain) p.fill(0);
    if (this.host.error) return;
    for (const { m, conn, sequence, frame, epoch } of moved) {
      if (m.number < this.peerAcked) continue;
      m.frame = frame;
      m.conn = conn;
      m.sequence = sequence;
      this.countEpoch(m.epoch, -1);
      this.countEpoch(epoch, 1);
      m.epoch = epoch;
      m.retransmitted = true;
      this.stats.retransmittedMessages++;
      this.stats.retransmittedBytes += m.payloadLength;
      if (conn.state === 'closed') this.queueRetransmit(m);
      else conn.put(sequence, frame, m.payloadLength);
    }
    this.retireEpochs();
  }
}
