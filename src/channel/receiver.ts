/**
 * The receiving half of a channel: frames that passed their connection's checks are opened in
 * batches (into the consumer's memory where it places them), put back in message order, delivered
 * exactly once, and the peer's END ends delivery. What the sending half must hear (the peer's ACKs)
 * it hands on, opened.
 */
import { FerryError, toFerryError } from '../errors.js';
import type { ChannelMessage, ChannelStats, PlacePayload, Placement } from './types.js';
import type { Connection } from './connection.js';
import type { RawFrame } from './decoder.js';
import type { FramePool } from './frame-pool.js';
import type { BodyTarget } from './reader.js';
import type { AckPolicy } from './ack-policy.js';
import { takeBatch, type EpochJob, type FrameCrypto } from './frame-crypto.js';
import { Flag, FrameType, FRAME_TYPE_NAMES, MAX_PAYLOAD_BYTES, type FrameHeader } from './wire.js';

/** What receiving takes from the rest of the channel. */
export interface ReceiverHost {
  readonly error: FerryError | null;
  fail(err: FerryError): void;
  /** The peer acknowledged `count` messages (and our END, with `endSeen`). */
  onAck(count: number, endSeen: boolean): void;
  /** Every connection of the channel not yet lost, handshakes included. */
  connections(): Iterable<Connection>;
}

export interface ReceiverOptions {
  windowBytes: number;
  allocatePayload?: (messageType: number, length: number) => Uint8Array;
  placePayload?: PlacePayload | null;
}

interface OpenItem {
  conn: Connection;
  frame: RawFrame;
}

type Waiter = { resolve: (m: ChannelMessage | null) => void; reject: (e: FerryError) => void };

export class Receiver {
  private readonly windowBytes: number;
  private readonly placePayload: PlacePayload | null;
  private readonly allocatePayload: (messageType: number, length: number) => Uint8Array;
  private readonly consumerAllocates: boolean;
  private openQueue: OpenItem[] = [];
  private opening = false;
  private nextDeliver = 0;
  /** Arrived ahead of delivery, with each message's length on the wire (a placed payload is shorter). */
  private readonly reorder = new Map<number, { message: ChannelMessage; length: number }>();
  private bufferedBytes = 0;
  private peerEndTotal: number | null = null;
  private highestReceived = -1;
  private readonly waiters: Waiter[] = [];
  /** A connection's epoch moved since the last look at which old keys can go. */
  private epochMoved = false;

  constructor(
    private readonly host: ReceiverHost,
    private readonly crypto: FrameCrypto,
    private readonly pool: FramePool,
    private readonly acks: AckPolicy,
    private readonly stats: ChannelStats,
    options: ReceiverOptions,
  ) {
    this.windowBytes = options.windowBytes;
    this.allocatePayload = options.allocatePayload ?? ((_type, length) => Buffer.allocUnsafe(length));
    this.placePayload = options.placePayload ?? null;
    this.consumerAllocates = options.allocatePayload !== undefined;
  }

  /** Messages delivered so far: where a new connection's HELLO says this side resumes. */
  get delivered(): number {
    return this.nextDeliver;
  }

  get endSeen(): boolean {
    return this.peerEndTotal !== null;
  }

  /** The peer's END and every message before it delivered. */
  get deliveredAll(): boolean {
    return this.peerEndTotal !== null && this.nextDeliver === this.peerEndTotal;
  }

  receive(): Promise<ChannelMessage | null> {
    if (this.host.error) return Promise.reject(this.host.error);
    const ready = this.takeNext();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Plain DATA with consumer memory, once `open()`: the socket reads the payload straight into it. */
  bodyTarget(open: () => boolean): BodyTarget | undefined {
    if (this.crypto.encrypted || !this.consumerAllocates) return undefined;
    return (h) => (h.type === FrameType.DATA && open() && !this.host.error ? this.payloadMemory(h) : null);
  }

  /** A frame of an open connection, in its arrival order; false when it failed the channel. */
  queue(conn: Connection, frame: RawFrame): boolean {
    const err = this.checkFrame(conn, frame.header);
    if (err) {
      this.host.fail(err);
      return false;
    }
    this.openQueue.push({ conn, frame });
    return true;
  }

  scheduleOpen(): void {
    if (this.opening || this.openQueue.length === 0 || this.host.error) return;
    this.opening = true;
    queueMicrotask(() => {
      this.openAll().then(
        () => {
          this.opening = false;
          this.scheduleOpen();
        },
        (err) => {
          this.opening = false;
          this.host.fail(toFerryError(err, 'ERR_FERRY_INTERNAL'));
        },
      );
    });
  }

  fail(err: FerryError): void {
    for (const w of this.waiters.splice(0)) w.reject(err);
    this.openQueue = [];
    for (const m of this.reorder.values()) m.message.payload.fill(0);
    this.reorder.clear();
  }

  private checkFrame(conn: Connection, h: FrameHeader): FerryError | null {
    if (h.connectionId !== conn.recvId) {
      return new FerryError(
        'ERR_FERRY_SEQUENCE',
        `frame of connection ${h.connectionId >>> 0} arrived on connection ${conn.recvId}: replayed`,
      );
    }
    if (h.sequence !== conn.nextRecvSequence) {
      return new FerryError(
        'ERR_FERRY_SEQUENCE',
        `frame sequence ${h.sequence} on connection ${conn.id}, expected ${conn.nextRecvSequence}: replayed, reordered or dropped`,
      );
    }
    conn.nextRecvSequence++;
    const modeError = this.crypto.checkMode(h);
    if (modeError) return modeError;
    if (h.type === FrameType.HELLO) return new FerryError('ERR_FERRY_FRAME', 'a second HELLO on an open connection');
    return this.checkEpoch(conn, h);
  }

  /**
   * On each connection the peer's epoch steps by exactly one, and only at a KEY_UPDATE; a
   * connection's first frame may start at any epoch not yet retired (docs/protocol.md, "Key epochs").
   */
  private checkEpoch(conn: Connection, h: FrameHeader): FerryError | null {
    const e = h.epoch;
    const at = conn.recvEpoch;
    const where = `${FRAME_TYPE_NAMES[h.type]} sequence ${h.sequence} on connection ${conn.id}`;
    if (at === null) {
      if (h.type === FrameType.KEY_UPDATE) return new FerryError('ERR_FERRY_SEQUENCE', `${where}: a KEY_UPDATE before any frame`);
      if (e < this.crypto.receiveFloor) {
        return new FerryError(
          'ERR_FERRY_SEQUENCE',
          `${where} is of key epoch ${e}, retired (the peer is at ${this.crypto.receiveFloor} or later): old epoch`,
        );
      }
    } else if (h.type === FrameType.KEY_UPDATE ? e !== at + 1 : e !== at) {
      const what = e < at + (h.type === FrameType.KEY_UPDATE ? 1 : 0) ? 'old epoch' : 'skipped epoch';
      return new FerryError('ERR_FERRY_SEQUENCE', `${where} is of key epoch ${e}, the connection is at ${at}: ${what}`);
    }
    if (at !== e) {
      conn.recvEpoch = e;
      this.epochMoved = true;
      if (e > this.stats.keyEpochReceived) this.stats.keyEpochReceived = e;
    }
    return null;
  }

  /** Retires the keys of epochs no frame can still come in: below every connection's epoch and every frame waiting to be opened. */
  private retireOldEpochs(): void {
    if (!this.epochMoved || !this.crypto.encrypted) return;
    this.epochMoved = false;
    let needed = Infinity;
    for (const conn of this.host.connections()) {
      if (conn.state === 'closed') continue;
      // A connection yet to carry a frame may start at any epoch from the floor up.
      needed = Math.min(needed, conn.recvEpoch ?? this.crypto.receiveFloor);
    }
    for (const { frame } of this.openQueue) needed = Math.min(needed, frame.header.epoch);
    if (needed !== Infinity) this.crypto.retireReceived(needed);
  }

  private async openAll(): Promise<void> {
    while (this.openQueue.length > 0 && !this.host.error) {
      const batch = takeBatch(this.openQueue, (o) => o.frame.header.payloadLength);
      const placements: (Placement | null)[] = [];
      const payloads = this.crypto.encrypted ? await this.openBatch(batch, placements) : batch.map(({ frame }) => this.plainPayload(frame));
      if (!payloads || this.host.error) return;
      for (let i = 0; i < batch.length && !this.host.error; i++) this.onFrame(batch[i]!.frame, payloads[i]!, placements[i] != null);
      if (this.crypto.encrypted || this.consumerAllocates)
        for (const { frame } of batch) if (frame.gathered) this.pool.give(frame.gathered);
      this.retireOldEpochs();
    }
  }

  /** Opens a batch, each payload where it is placed (filling `placements`) or into memory of its own; null: the channel failed. */
  private async openBatch(batch: OpenItem[], placements: (Placement | null)[]): Promise<Uint8Array[] | null> {
    if (!this.crypto.live) return null;
    const ivs = batch.map(({ frame }) => this.crypto.iv(frame.header.connectionId, frame.header.sequence));
    const claimed = new Set<number>();
    for (let i = 0; i < batch.length; i++) placements.push(await this.placement(batch[i]!.frame, ivs[i]!, claimed));
    if (this.host.error || !this.crypto.live) return null;
    const jobs: EpochJob[] = batch.map(({ frame }, i) => ({
      epoch: frame.header.epoch,
      iv: ivs[i]!,
      aad: frame.aad,
      input: frame.body,
      output: placements[i]?.segments ?? this.payloadMemory(frame.header),
    }));
    try {
      return (await this.crypto.openBatch(jobs)).map((p, i) => placements[i]?.payload ?? p);
    } catch (err) {
      const e = toFerryError(err, 'ERR_FERRY_AUTH');
      const index = e.detail?.jobIndex;
      const bad = index === undefined ? undefined : batch[index]?.frame.header;
      const where = bad ? `: ${FRAME_TYPE_NAMES[bad.type]} sequence ${bad.sequence} on connection ${bad.connectionId & 0x7fffffff}` : '';
      this.host.fail(new FerryError(e.code, `frame failed authentication${where} (tampered, forged or of another migration)`));
      return null;
    }
  }

  private plainPayload(frame: RawFrame): Uint8Array {
    const body = frame.body.subarray(0, frame.header.payloadLength);
    if (frame.target) return frame.target;
    if (!this.consumerAllocates || frame.header.type !== FrameType.DATA) return body;
    // The consumer supplies memory: copy into it, so the frame's buffer can be used again.
    const out = this.payloadMemory(frame.header);
    out.set(body);
    return out;
  }

  /**
   * Where an encrypted DATA frame is opened to, when the consumer places payloads: null for a
   * message that already arrived or is being opened in this batch (a retransmission: it goes to a
   * buffer of its own and is dropped), or that the consumer does not place.
   */
  private async placement(frame: RawFrame, iv: Uint8Array, claimed: Set<number>): Promise<Placement | null> {
    const h = frame.header;
    if (!this.placePayload || h.type !== FrameType.DATA) return null;
    const n = h.messageNumber;
    if (n < this.nextDeliver || this.reorder.has(n) || claimed.has(n)) return null;
    if (!this.crypto.live) return null;
    let placed: Placement | null;
    try {
      placed = await this.placePayload(h.messageType, h.payloadLength, (offset, length) =>
        this.crypto.peek(h.epoch, iv, frame.body, offset, length),
      );
    } catch {
      return null; // opened as usual; if the bytes were forged the open fails
    }
    if (placed) claimed.add(n);
    return placed;
  }

  private payloadMemory(h: FrameHeader): Uint8Array {
    if (h.type !== FrameType.DATA) return Buffer.allocUnsafe(h.payloadLength);
    const out = this.allocatePayload(h.messageType, h.payloadLength);
    if (!(out instanceof Uint8Array) || out.length !== h.payloadLength) {
      throw new FerryError('ERR_FERRY_INPUT', `allocatePayload gave ${out?.length} bytes for a ${h.payloadLength}-byte message`);
    }
    return out;
  }

  private onFrame(frame: RawFrame, payload: Uint8Array, placed: boolean): void {
    const h = frame.header;
    switch (h.type) {
      case FrameType.DATA:
        this.onMessage(h, payload, placed);
        break;
      case FrameType.ACK:
        this.host.onAck(h.messageNumber, (h.flags & Flag.END_SEEN) !== 0);
        break;
      case FrameType.END:
        this.onEnd(h.messageNumber);
        break;
      case FrameType.KEY_UPDATE:
        break; // its work was done when it was checked (checkEpoch) and opened under its new key
      case FrameType.ABORT:
        this.host.fail(new FerryError('ERR_FERRY_ABORTED', `the peer aborted the channel: ${Buffer.from(payload).toString('utf8')}`));
        break;
      default:
        this.host.fail(new FerryError('ERR_FERRY_FRAME', `unexpected ${FRAME_TYPE_NAMES[h.type]} frame`));
    }
  }

  private onMessage(h: FrameHeader, payload: Uint8Array, placed: boolean): void {
    const n = h.messageNumber;
    if (n < this.nextDeliver || this.reorder.has(n)) {
      // A retransmission after a failover, of a message already here: exactly once means drop it.
      this.stats.duplicatesDropped++;
      payload.fill(0);
      return;
    }
    if (this.peerEndTotal !== null && n >= this.peerEndTotal) {
      this.host.fail(new FerryError('ERR_FERRY_SEQUENCE', `message ${n} after the peer's END at ${this.peerEndTotal}`));
      return;
    }
    const length = h.payloadLength;
    if (this.bufferedBytes + length > this.windowBytes + MAX_PAYLOAD_BYTES) {
      this.host.fail(new FerryError('ERR_FERRY_SEQUENCE', `the peer overran the ${this.windowBytes}-byte window`));
      return;
    }
    this.reorder.set(n, { message: placed ? { type: h.messageType, payload, placed: true } : { type: h.messageType, payload }, length });
    this.bufferedBytes += length;
    if (n > this.highestReceived) this.highestReceived = n;
    this.stats.bytesReceived += length;
    this.stats.messagesReceived++;
    this.wake();
  }

  private onEnd(total: number): void {
    if (total < this.nextDeliver || total <= this.highestReceived || (this.peerEndTotal !== null && this.peerEndTotal !== total)) {
      this.host.fail(new FerryError('ERR_FERRY_SEQUENCE', `the peer's END names ${total} messages, which contradicts what arrived`));
      return;
    }
    this.peerEndTotal = total;
    this.wake();
    this.acks.now();
  }

  /** The next message in order; null after the peer's END; undefined while it has not arrived. */
  private takeNext(): ChannelMessage | null | undefined {
    const m = this.reorder.get(this.nextDeliver);
    if (m) {
      this.reorder.delete(this.nextDeliver++);
      this.bufferedBytes -= m.length;
      this.acks.delivered(m.length);
      return m.message;
    }
    if (this.peerEndTotal !== null && this.nextDeliver === this.peerEndTotal) return null;
    return undefined;
  }

  private wake(): void {
    while (this.waiters.length > 0) {
      const next = this.takeNext();
      if (next === undefined) return;
      this.waiters.shift()!.resolve(next);
    }
  }
}
