/**
 * The channel's core, the same on both sides: message numbers, the send window and its
 * retransmission buffer, the reorder buffer, acknowledgements, END, batched sealing and opening,
 * and the sticky error. How connections come about differs (the source dials, the destination
 * adopts) and lives in source.ts and destination.ts. docs/protocol.md gives the argument.
 */
import type { Socket } from 'node:net';
import { FerryError, toFerryError } from '../errors.js';
import { MAX_THREADS, inputLength, type AeadJob, type AeadKey, type Backend, type BatchOptions } from '../crypto/backend.js';
import type { Channel, ChannelMessage, ChannelMode, ChannelSpec, ChannelStats, PlacePayload, Placement } from './types.js';
import { Connection } from './connection.js';
import type { RawFrame } from './decoder.js';
import { Pacer } from './pacer.js';
import { FramePool } from './frame-pool.js';
import { readInPlace } from './reader.js';
import {
  Flag,
  FrameType,
  FRAME_TYPE_NAMES,
  HEADER_BYTES,
  HELLO_PAYLOAD_BYTES,
  IV_BYTES,
  MAX_ABORT_BYTES,
  MAX_PAYLOAD_BYTES,
  MAX_WINDOW_BYTES,
  MIGRATION_ID,
  MIN_WINDOW_BYTES,
  SEAL_LIMIT_BYTES,
  TAG_BYTES,
  helloMigrationId,
  rewriteConnection,
  writeHeader,
  writeIv,
  type FrameHeader,
} from './wire.js';

export interface ChannelOptions {
  /** The crypto backend; default: loadBackend(). */
  backend?: Backend;
  /** Bytes this side lets the peer have unacknowledged (announced in HELLO). Default 64 MiB. */
  windowBytes?: number;
  /** A connection must finish its HELLO exchange within this. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** A connection on which nothing arrived for this long is dead (failover). Default 15 s. */
  stallTimeoutMs?: number;
  /** Send an ACK on an idle connection this often, so the peer can tell it is alive. Default 1 s. */
  keepaliveMs?: number;
  /**
   * Destination: fail with ERR_FERRY_NETWORK after this long without any connection. Source, once
   * a connection has opened: keep redialing for this long after the last one was lost. Default 30 s.
   */
  reconnectTimeoutMs?: number;
  /** Source: a TCP connect must succeed within this. Default 5 s. */
  connectTimeoutMs?: number;
  /** Source: full rounds over every network, all failing, before ERR_FERRY_NETWORK. Default 2. */
  connectRounds?: number;
  /**
   * Source: the operator's cancel while the channel connects. connectChannel then rejects at once
   * with the signal's reason (a FerryError; otherwise ERR_FERRY_ABORTED) instead of waiting for its
   * connect attempts and HELLO exchanges to run out. Once connected the caller listens itself.
   */
  signal?: AbortSignal;
  /**
   * Plain mode: copies pairs (flat[2i+1] into flat[2i]) off the event loop — the addon's copyBatch,
   * memcpy on the libuv pool — for a batch of payloads to be copied into their frames: a DATA
   * message's pages come as views of guest memory, and V8's copy out of a SharedArrayBuffer is a
   * slow one on the calling thread. Default: the copy runs on the calling thread.
   */
  copy?: ((flat: Uint8Array[]) => Promise<void>) | null;
  /** Lower the per-key seal limit (tests); never above SEAL_LIMIT_BYTES. */
  sealLimitBytes?: number;
  /** Told about each incoming connection refused before it touched the channel (wrong key, mode, id). */
  onRejectedConnection?: (error: FerryError) => void;
  /**
   * The memory each DATA payload is opened into (plain mode: copied into), `length` bytes exactly;
   * default a fresh buffer (plain mode: a view of the received frame). The consumer owns it once
   * receive() returned it, so it can hand out recycled buffers (warm memory: a fresh one costs
   * page faults) or memory of its own.
   */
  allocatePayload?: (messageType: number, length: number) => Uint8Array;
  /**
   * Encrypted mode, destination: opens DATA messages straight into the consumer's memory (pages
   * into guest memory, with no copy after the open). See PlacePayload for what may be placed
   * where. A retransmitted message that already arrived is never placed: it is opened into its
   * own buffer and dropped, so a placed message is written exactly once.
   */
  placePayload?: PlacePayload | null;
}

export const DEFAULT_WINDOW_BYTES = 64 * 1024 * 1024;
/** Frames sealed or opened in one backend call, at most; and bytes of payload. */
const BATCH_FRAMES = 64;
const BATCH_BYTES = 16 * 1024 * 1024;
/** Plain batches smaller than this are copied into their frames on the calling thread. */
const POOL_COPY_MIN_BYTES = 64 * 1024;
/**
 * An ACK goes at once after an eighth of the window was delivered, else this long after the first
 * delivery it covers. An encrypted ACK costs a seal on one side and an open on the other, each a
 * trip through the thread pool: at 1 ms that was ~1000 a second at full speed, ~8 % of each side's
 * CPU. 5 ms delays nothing while the window (64 MiB = 50 ms at 10 Gb/s) is far from full.
 */
const ACK_DELAY_MS = 5;

interface OutMessage {
  number: number;
  payloadLength: number;
  /** The frame as last sealed, header included; kept until acknowledged. */
  frame: Buffer;
  conn: Connection | null;
  sequence: number;
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

interface OpenItem {
  conn: Connection;
  frame: RawFrame;
}

function validateSpec(spec: ChannelSpec): void {
  const bad = (what: string): never => {
    throw new FerryError('ERR_FERRY_INPUT', `channel spec: ${what}`);
  };
  if (typeof spec.migrationId !== 'string' || !MIGRATION_ID.test(spec.migrationId)) bad('migrationId must be 1-64 of [A-Za-z0-9._-]');
  if (spec.mode !== 'encrypted' && spec.mode !== 'plain') bad('mode must be "encrypted" or "plain"');
  if (spec.mode === 'encrypted' && (!(spec.key instanceof Uint8Array) || spec.key.length !== 32)) bad('key must be 32 bytes');
  if (!(spec.nonce instanceof Uint8Array) || spec.nonce.length !== 8) bad('nonce must be 8 bytes');
  if (!Number.isInteger(spec.streams) || spec.streams < 1 || spec.streams > 16) bad('streams must be 1 to 16');
  if (spec.maxBytesPerSecond !== undefined && !(spec.maxBytesPerSecond > 0)) bad('maxBytesPerSecond must be positive');
  if (spec.cryptoThreads !== undefined && !(Number.isInteger(spec.cryptoThreads) && spec.cryptoThreads >= 1 && spec.cryptoThreads <= MAX_THREADS)) {
    bad(`cryptoThreads must be 1 to ${MAX_THREADS}`);
  }
}

export abstract class ChannelCore implements Channel {
  readonly migrationId: string;
  readonly mode: ChannelMode;
  readonly cryptoThreads: number | null;
  error: FerryError | null = null;
  readonly stats: ChannelStats = {
    bytesSent: 0,
    bytesReceived: 0,
    wireBytesSent: 0,
    wireBytesReceived: 0,
    messagesSent: 0,
    messagesReceived: 0,
    connectionsOpened: 0,
    failovers: 0,
    network: null,
    connectionsRejected: 0,
    retransmittedMessages: 0,
    duplicatesDropped: 0,
    cryptoThreadsPeak: 0,
  };

  protected readonly conns = new Set<Connection>();
  protected readonly pacer: Pacer;
  private readonly pool: FramePool;
  protected readonly options: Required<Omit<ChannelOptions, 'backend' | 'onRejectedConnection' | 'sealLimitBytes' | 'allocatePayload' | 'signal' | 'copy' | 'placePayload'>>;
  private readonly placePayload: PlacePayload | null;
  private readonly copy: ((flat: Uint8Array[]) => Promise<void>) | null;
  private readonly allocatePayload: (messageType: number, length: number) => Uint8Array;
  private readonly consumerAllocates: boolean;
  private readonly encrypted: boolean;
  private readonly nonce: Buffer;
  private key: AeadKey | null;
  /** What every seal and open of this channel passes to the backend: the thread limit, and the peak it reports. */
  private readonly batchOptions: BatchOptions;
  private readonly sealLimit: number;
  private sealedBytes = 0;

  // Sending.
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

  // Receiving.
  private nextDeliver = 0;
  /** Arrived ahead of delivery, with each message's length on the wire (a placed payload is shorter). */
  private readonly reorder = new Map<number, { message: ChannelMessage; length: number }>();
  private bufferedBytes = 0;
  private peerEndTotal: number | null = null;
  private highestReceived = -1;
  private readonly receiveWaiters: { resolve: (m: ChannelMessage | null) => void; reject: (e: FerryError) => void }[] = [];
  private openQueue: OpenItem[] = [];
  private opening = false;
  private ackedUpTo = 0;
  private ackedEnd = false;
  private deliveredSinceAck = 0;
  private ackTimer: NodeJS.Timeout | null = null;

  private keepaliveTimer: NodeJS.Timeout | null = null;
  private finished = false;

  protected constructor(spec: ChannelSpec, key: AeadKey | null, options: ChannelOptions) {
    this.migrationId = spec.migrationId;
    this.mode = spec.mode;
    this.cryptoThreads = spec.cryptoThreads ?? null;
    this.batchOptions = {
      ...(spec.cryptoThreads === undefined ? {} : { threads: spec.cryptoThreads }),
      onThreads: (n) => {
        if (n > this.stats.cryptoThreadsPeak) this.stats.cryptoThreadsPeak = n;
      },
    };
    this.encrypted = spec.mode === 'encrypted';
    this.nonce = Buffer.from(spec.nonce);
    this.key = key;
    const windowBytes = options.windowBytes ?? DEFAULT_WINDOW_BYTES;
    if (!Number.isInteger(windowBytes) || windowBytes < MIN_WINDOW_BYTES || windowBytes > MAX_WINDOW_BYTES) {
      throw new FerryError('ERR_FERRY_INPUT', `windowBytes must be ${MIN_WINDOW_BYTES} to ${MAX_WINDOW_BYTES}`);
    }
    this.options = {
      windowBytes,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
      stallTimeoutMs: options.stallTimeoutMs ?? 15_000,
      keepaliveMs: options.keepaliveMs ?? 1_000,
      reconnectTimeoutMs: options.reconnectTimeoutMs ?? 30_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 5_000,
      connectRounds: options.connectRounds ?? 2,
    };
    this.allocatePayload = options.allocatePayload ?? ((_type, length) => Buffer.allocUnsafe(length));
    this.copy = options.copy ?? null;
    this.placePayload = options.placePayload ?? null;
    this.consumerAllocates = options.allocatePayload !== undefined;
    this.sealLimit = Math.min(SEAL_LIMIT_BYTES, options.sealLimitBytes ?? SEAL_LIMIT_BYTES);
    this.pacer = new Pacer(spec.maxBytesPerSecond, MAX_PAYLOAD_BYTES);
    this.pool = new FramePool(windowBytes + 2 * MAX_PAYLOAD_BYTES);
    const tick = Math.max(10, Math.min(this.options.keepaliveMs, this.options.handshakeTimeoutMs / 4, this.options.stallTimeoutMs / 4));
    this.keepaliveTimer = setInterval(() => this.onTick(), tick);
    this.keepaliveTimer.unref();
  }

  /** Checks the spec and imports its key (once for the channel's life). */
  static async prepareKey(spec: ChannelSpec, options: ChannelOptions): Promise<AeadKey | null> {
    validateSpec(spec);
    if (spec.mode !== 'encrypted') return null;
    const backend = options.backend ?? (await (await import('../crypto/index.js')).loadBackend());
    return backend.importKey(spec.key);
  }

  // ---------------------------------------------------------------- the Channel contract

  send(type: number, payload: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (this.error) return Promise.reject(this.error);
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
      return Promise.reject(new FerryError('ERR_FERRY_INPUT', `message of ${length} bytes exceeds the ${MAX_PAYLOAD_BYTES}-byte maximum: split it`));
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

  receive(): Promise<ChannelMessage | null> {
    if (this.error) return Promise.reject(this.error);
    const ready = this.takeNext();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => this.receiveWaiters.push({ resolve, reject }));
  }

  end(): Promise<void> {
    if (this.error) return Promise.reject(this.error);
    this.endRequested = true;
    const done = new Promise<void>((resolve, reject) => this.endWaiters.push({ resolve, reject }));
    this.schedulePump();
    this.checkDone();
    return done;
  }

  abort(reason: FerryError): void {
    if (this.error) return;
    // Tell the peer why, authenticated, on every connection that can carry it, then close.
    const text = Buffer.from(`${reason.code}: ${reason.message}`, 'utf8').subarray(0, MAX_ABORT_BYTES);
    const key = this.key;
    const targets = [...this.conns].filter((c) => c.usable);
    const frames = targets.map((conn) => ({ conn, f: this.buildFrame(conn, FrameType.ABORT, 0, 0, 0, text.length, 0) }));
    this.key = null;
    this.fail(reason, new Set(targets));
    void Promise.all(
      frames.map(async ({ conn, f }) => {
        await this.sealOne(key, conn.sendId, f.sequence, f.buf, f.aadBytes, text);
        conn.close(true, f.buf);
      }),
    )
      .catch(() => {})
      .finally(() => {
        key?.destroy();
        for (const { conn } of frames) conn.close(false);
      });
  }

  close(): void {
    if (this.finished && !this.error) return;
    this.abort(new FerryError('ERR_FERRY_ABORTED', 'channel closed'));
  }

  // ---------------------------------------------------------------- for the sides

  protected get hasWork(): boolean {
    return !this.error && !this.finished;
  }

  /** Number of connections open or finishing their HELLO. */
  protected get liveConnections(): number {
    let n = 0;
    for (const c of this.conns) if (c.state !== 'closed') n++;
    return n;
  }

  protected newConnection(socket: Socket, accepting: boolean, network: string): Connection {
    // Plain DATA with consumer memory: the socket reads the payload straight into it.
    const bodyTarget =
      !this.encrypted && this.consumerAllocates
        ? (h: FrameHeader): Uint8Array | null => (h.type === FrameType.DATA && conn.state === 'open' && !this.error ? this.payloadMemory(h) : null)
        : undefined;
    const conn: Connection = new Connection(socket, accepting, network, this.pacer, this.stats, (n) => this.pool.take(n), bodyTarget);
    socket.on('error', () => this.lose(conn, 'connection error'));
    socket.on('close', () => this.lose(conn, 'connection closed'));
    socket.on('end', () => this.lose(conn, 'connection ended'));
    return conn;
  }

  protected attach(conn: Connection, head?: Uint8Array): void {
    this.conns.add(conn);
    if (head && head.length > 0) this.onData(conn, Buffer.from(head));
    if (conn.state === 'closed') return;
    const inPlace = readInPlace(conn.socket, conn.reader, (chunk) => this.onData(conn, chunk), (n) => this.onRead(conn, n));
    if (!inPlace) conn.socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    // The router paused it; a 'data' listener alone does not restart a paused stream.
    conn.socket.resume();
  }

  /** A HELLO for `conn`: header and extension (the AAD) and sealed payload. */
  protected async sealHello(conn: Connection): Promise<Buffer> {
    const payload = Buffer.alloc(HELLO_PAYLOAD_BYTES);
    payload.writeUInt32BE(this.options.windowBytes, 0);
    const frame = this.buildFrame(conn, FrameType.HELLO, 0, 0, this.nextDeliver, payload.length, 0, this.migrationId);
    return this.sealOne(this.key, conn.sendId, frame.sequence, frame.buf, frame.aadBytes, payload);
  }

  /**
   * Checks a peer's HELLO, which must be the first frame of a connection. Returns the error that
   * refuses it, or the window the peer announces. Touches no channel state: the caller decides what a refusal means.
   */
  protected async checkHello(frame: RawFrame): Promise<FerryError | number> {
    const h = frame.header;
    if (h.type !== FrameType.HELLO) return new FerryError('ERR_FERRY_FRAME', `first frame is ${FRAME_TYPE_NAMES[h.type]}, not HELLO`);
    const modeError = this.checkMode(h);
    if (modeError) return modeError;
    if (h.sequence !== 0) return new FerryError('ERR_FERRY_SEQUENCE', `HELLO has sequence ${h.sequence}, not 0`);
    let id: string;
    try {
      id = helloMigrationId(frame.aad);
    } catch (err) {
      return toFerryError(err, 'ERR_FERRY_FRAME');
    }
    if (id !== this.migrationId) return new FerryError('ERR_FERRY_AUTH', 'HELLO names another migration');
    let payload: Buffer;
    try {
      payload = await this.openOne(h.connectionId, 0, frame);
    } catch (err) {
      return toFerryError(err, 'ERR_FERRY_AUTH');
    }
    const window = payload.readUInt32BE(0);
    if (window < MIN_WINDOW_BYTES || window > MAX_WINDOW_BYTES || payload.readUInt32BE(4) !== 0) {
      return new FerryError('ERR_FERRY_FRAME', 'HELLO announces an impossible window');
    }
    if (h.messageNumber > this.nextNumber) {
      return new FerryError('ERR_FERRY_SEQUENCE', `HELLO resumes at message ${h.messageNumber}, beyond the ${this.nextNumber} sent`);
    }
    return window;
  }

  /** The connection passed its HELLO exchange: put it to work. */
  protected opened(conn: Connection, hello: FrameHeader, peerWindow: number): void {
    conn.state = 'open';
    conn.nextRecvSequence = 1;
    this.peerWindow = peerWindow;
    this.stats.connectionsOpened++;
    this.stats.network = conn.network;
    this.onAck(hello.messageNumber, false);
    this.drainAdmit();
    this.schedulePump();
    const held = conn.held ?? [];
    conn.held = null;
    this.onFrames(conn, held);
  }

  protected reject(conn: Connection, err: FerryError): void {
    this.stats.connectionsRejected++;
    this.conns.delete(conn);
    conn.close(false);
    this.onRejected(err);
  }

  protected onRejected(_err: FerryError): void {}

  /** A connection went away (or failed its handshake). */
  protected lose(conn: Connection, why: string): void {
    if (conn.state === 'closed' && !this.conns.has(conn)) return;
    const wasOpen = conn.state === 'open';
    conn.close(false);
    this.conns.delete(conn);
    if (!this.hasWork) return;
    if (wasOpen) this.requeue(conn);
    this.connectionLost(conn, wasOpen, why);
  }

  /** What the side does after a loss: the source dials again, the destination waits for one. */
  protected abstract connectionLost(conn: Connection, wasOpen: boolean, why: string): void;

  /** Fails the channel for good with `err`; every pending and later call rejects with it. */
  fail(err: FerryError, linger: ReadonlySet<Connection> = new Set()): void {
    if (this.error) return;
    this.error = err;
    this.stopTimers();
    for (const conn of this.conns) if (!linger.has(conn)) conn.close(false);
    this.conns.clear();
    this.pacer.stop();
    for (const w of this.admitQueue.splice(0)) w.fail(err);
    for (const s of this.sealQueue.splice(0)) s.reject(err);
    for (const w of this.receiveWaiters.splice(0)) w.reject(err);
    for (const w of this.endWaiters.splice(0)) w.reject(err);
    this.unacked.length = 0;
    this.unackedHead = 0;
    this.retransmitQueue = [];
    this.openQueue = [];
    for (const m of this.reorder.values()) m.message.payload.fill(0);
    this.reorder.clear();
    this.destroyKey();
    this.pool.clear();
    this.onFailed(err);
  }

  protected onFailed(_err: FerryError): void {}

  protected stopTimers(): void {
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = null;
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
  }

  private destroyKey(): void {
    this.key?.destroy();
    this.key = null;
  }

  // ---------------------------------------------------------------- sealing

  private fits(bytes: number): boolean {
    return this.inflightBytes === 0 || this.inflightBytes + bytes <= Math.min(this.peerWindow, this.options.windowBytes);
  }

  private drainAdmit(): void {
    while (this.admitQueue.length > 0 && !this.error && this.fits(this.admitQueue[0]!.bytes)) this.admitQueue.shift()!.go();
  }

  private schedulePump(): void {
    if (this.error) return;
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
          if (this.pumpAgain || (more && this.pickConnection())) this.schedulePump();
        },
        (err) => {
          this.pumping = false;
          this.fail(toFerryError(err, 'ERR_FERRY_INTERNAL'));
        },
      );
    });
  }

  private async pump(): Promise<void> {
    while (!this.error && this.pickConnection()) {
      if (this.retransmitQueue.length > 0) await this.retransmitBatch();
      else if (this.sealQueue.length > 0) await this.sealBatch();
      else break;
    }
    if (!this.error && this.endRequested && this.admitQueue.length === 0 && this.sealQueue.length === 0 && this.retransmitQueue.length === 0 && !this.endConn) {
      const conn = this.pickConnection();
      if (conn && !this.peerSawEnd) {
        this.endConn = conn;
        await this.sendControl(conn, FrameType.END, 0, this.nextNumber);
      }
    }
  }

  protected pickConnection(): Connection | null {
    let best: Connection | null = null;
    for (const c of this.conns) if (c.usable && (!best || c.load < best.load)) best = c;
    return best;
  }

  private countSeal(bytes: number): void {
    this.sealedBytes += bytes;
    if (this.encrypted && this.sealedBytes > this.sealLimit) {
      throw new FerryError('ERR_FERRY_LIMIT', `the per-key limit of ${this.sealLimit} sealed bytes is reached: a new migration key is needed`);
    }
  }

  private buildFrame(
    conn: Connection,
    type: FrameType,
    flags: number,
    messageType: number,
    messageNumber: number,
    payloadLength: number,
    extraCost: number,
    migrationId?: string,
  ): { buf: Buffer; sequence: number; aadBytes: number } {
    const sequence = conn.reserveSequence();
    const aadBytes = HEADER_BYTES + (migrationId?.length ?? 0);
    const size = aadBytes + payloadLength + (this.encrypted ? TAG_BYTES : 0);
    const buf = type === FrameType.DATA ? this.pool.take(size) : Buffer.allocUnsafe(size);
    writeHeader(buf, {
      type,
      flags: flags | (this.encrypted ? Flag.ENCRYPTED : 0),
      messageType,
      connectionId: conn.sendId,
      sequence,
      messageNumber,
      payloadLength,
      migrationId,
    });
    conn.assign(buf.length + extraCost);
    return { buf, sequence, aadBytes };
  }

  private ivFor(connectionId: number, sequence: number): Buffer {
    return writeIv(Buffer.allocUnsafe(IV_BYTES), this.nonce, connectionId, sequence);
  }

  private async sealOne(key: AeadKey | null, connectionId: number, sequence: number, buf: Buffer, aadBytes: number, payload: Uint8Array): Promise<Buffer> {
    if (!this.encrypted) {
      buf.set(payload, aadBytes);
      return buf;
    }
    if (!key) throw this.error ?? new FerryError('ERR_FERRY_ABORTED', 'channel closed');
    this.countSeal(payload.length);
    await key.sealBatch(
      [{ iv: this.ivFor(connectionId, sequence), aad: buf.subarray(0, aadBytes), input: payload, output: buf.subarray(aadBytes) }],
      this.batchOptions,
    );
    return buf;
  }

  private async openOne(connectionId: number, sequence: number, frame: RawFrame): Promise<Buffer> {
    if (!this.encrypted) return frame.body;
    if (!this.key) throw this.error ?? new FerryError('ERR_FERRY_ABORTED', 'channel closed');
    const out = Buffer.allocUnsafe(frame.header.payloadLength);
    await this.key.openBatch([{ iv: this.ivFor(connectionId, sequence), aad: frame.aad, input: frame.body, output: out }], this.batchOptions);
    return out;
  }

  /** Seals a control frame (ACK, END, ABORT) and queues it on `conn`. */
  private async sendControl(conn: Connection, type: FrameType, flags: number, messageNumber: number): Promise<void> {
    const payload = Buffer.alloc(0);
    const f = this.buildFrame(conn, type, flags, 0, messageNumber, payload.length, 0);
    try {
      await this.sealOne(this.key, conn.sendId, f.sequence, f.buf, f.aadBytes, payload);
    } catch (err) {
      this.fail(toFerryError(err, 'ERR_FERRY_INTERNAL'));
      return;
    }
    conn.put(f.sequence, f.buf, 0);
  }

  private takeBatch<T>(queue: T[], length: (t: T) => number): T[] {
    let bytes = 0;
    let n = 0;
    while (n < queue.length && n < BATCH_FRAMES && (n === 0 || bytes + length(queue[n]!) <= BATCH_BYTES)) bytes += length(queue[n++]!);
    return queue.splice(0, n);
  }

  private async sealBatch(): Promise<void> {
    const batch = this.takeBatch(this.sealQueue, (s) => s.length);
    try {
      await this.sealTaken(batch);
    } catch (err) {
      this.fail(toFerryError(err, 'ERR_FERRY_INTERNAL'));
    }
    // Whatever stopped this batch half-way (a failure meanwhile) is what its senders hear.
    if (this.error) for (const s of batch) s.reject(this.error);
  }

  private async sealTaken(batch: PendingSend[]): Promise<void> {
    const jobs: AeadJob[] = [];
    const copies: Uint8Array[] = [];
    let copyBytes = 0;
    const built = batch.map((s) => {
      const conn = this.pickConnection()!;
      const f = this.buildFrame(conn, FrameType.DATA, 0, s.type, s.number, s.length, 0);
      if (this.encrypted) {
        this.countSeal(s.length);
        // Segments are sealed where they lie (the seal gathers them): no copy on this thread.
        jobs.push({ iv: this.ivFor(conn.sendId, f.sequence), aad: f.buf.subarray(0, HEADER_BYTES), input: s.payload, output: f.buf.subarray(HEADER_BYTES) });
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
      if (!this.key) return;
      await this.key.sealBatch(jobs, this.batchOptions);
    }
    // Plain: as the seal would, off the event loop when the batch is worth the pool's round trip.
    if (this.copy && copyBytes >= POOL_COPY_MIN_BYTES) await this.copy(copies);
    else for (let i = 0; i < copies.length; i += 2) copies[i]!.set(copies[i + 1]!);
    if (this.error) return;
    for (const { s, conn, f } of built) {
      const msg: OutMessage = { number: s.number, payloadLength: s.length, frame: f.buf, conn, sequence: f.sequence };
      this.unacked.push(msg);
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

  /** Everything a lost connection carried that the peer has not acknowledged goes again elsewhere. */
  private requeue(conn: Connection): void {
    for (let i = this.unackedHead; i < this.unacked.length; i++) if (this.unacked[i]!.conn === conn) this.queueRetransmit(this.unacked[i]!);
    this.retransmitQueue.sort((a, b) => a.number - b.number);
    if (this.endConn === conn) this.endConn = null;
    this.schedulePump();
  }

  /** Re-seals unacknowledged messages for a new connection and sequence (a new IV). */
  private async retransmitBatch(): Promise<void> {
    const batch = this.takeBatch(this.retransmitQueue, (m) => m.payloadLength);
    const plain = batch.map((m) => (this.encrypted ? Buffer.allocUnsafe(m.payloadLength) : m.frame.subarray(HEADER_BYTES)));
    if (this.encrypted) {
      if (!this.key) return;
      await this.key.openBatch(
        batch.map((m, i) => ({
          iv: this.ivFor(m.frame.readUInt32BE(4), m.sequence),
          aad: m.frame.subarray(0, HEADER_BYTES),
          input: m.frame.subarray(HEADER_BYTES),
          output: plain[i],
        })),
        this.batchOptions,
      );
    }
    if (this.error) return;
    if (!this.pickConnection()) {
      // Every connection went while the batch was being opened: it waits for the next one.
      if (this.encrypted) for (const p of plain) p.fill(0);
      this.retransmitQueue = [...batch, ...this.retransmitQueue].sort((a, b) => a.number - b.number);
      return;
    }
    const jobs: AeadJob[] = [];
    const moved = batch.map((m, i) => {
      const conn = this.pickConnection()!;
      const sequence = conn.reserveSequence();
      const frame = Buffer.allocUnsafe(m.frame.length);
      m.frame.copy(frame, 0, 0, HEADER_BYTES);
      rewriteConnection(frame, conn.sendId, sequence);
      conn.assign(frame.length);
      if (this.encrypted) {
        this.countSeal(m.payloadLength);
        jobs.push({ iv: this.ivFor(conn.sendId, sequence), aad: frame.subarray(0, HEADER_BYTES), input: plain[i]!, output: frame.subarray(HEADER_BYTES) });
      } else {
        plain[i]!.copy(frame, HEADER_BYTES);
      }
      return { m, conn, sequence, frame };
    });
    if (jobs.length > 0 && this.key) await this.key.sealBatch(jobs, this.batchOptions);
    if (this.encrypted) for (const p of plain) p.fill(0);
    if (this.error) return;
    for (const { m, conn, sequence, frame } of moved) {
      if (m.number < this.peerAcked) continue;
      m.frame = frame;
      m.conn = conn;
      m.sequence = sequence;
      m.retransmitted = true;
      this.stats.retransmittedMessages++;
      if (conn.state === 'closed') this.queueRetransmit(m);
      else conn.put(sequence, frame, m.payloadLength);
    }
  }

  // ---------------------------------------------------------------- receiving

  /** A chunk read elsewhere ('data' event, the router's head). */
  private onData(conn: Connection, chunk: Buffer): void {
    this.onBytes(conn, chunk.length, chunk);
  }

  /** `n` bytes the socket read straight into the connection's reader. */
  private onRead(conn: Connection, n: number): void {
    this.onBytes(conn, n, null);
  }

  private onBytes(conn: Connection, n: number, chunk: Buffer | null): void {
    if (this.error || conn.state === 'closed') return;
    this.stats.wireBytesReceived += n;
    let frames: RawFrame[];
    try {
      frames = chunk ? conn.parse(chunk) : conn.received(n);
    } catch (err) {
      this.frameError(conn, toFerryError(err, 'ERR_FERRY_FRAME'));
      return;
    }
    this.onFrames(conn, frames);
  }

  private onFrames(conn: Connection, frames: RawFrame[]): void {
    for (const frame of frames) {
      if (conn.state === 'handshake') {
        // Frames behind the HELLO wait until it is verified.
        if (conn.held) conn.held.push(frame);
        else {
          conn.held = [];
          this.onHandshakeFrame(conn, frame);
        }
        continue;
      }
      if (conn.state !== 'open' || this.error) return;
      const err = this.checkFrame(conn, frame.header);
      if (err) {
        this.fail(err);
        return;
      }
      this.openQueue.push({ conn, frame });
    }
    this.scheduleOpen();
  }

  /** A malformed byte stream: fatal once the connection is bound to the channel, else a refusal. */
  private frameError(conn: Connection, err: FerryError): void {
    if (conn.state === 'open') this.fail(err);
    else this.reject(conn, err);
  }

  /** The side handles HELLO frames (and whatever arrives before its own HELLO exchange is over). */
  protected abstract onHandshakeFrame(conn: Connection, frame: RawFrame): void;

  protected checkMode(h: FrameHeader): FerryError | null {
    if (((h.flags & Flag.ENCRYPTED) !== 0) !== this.encrypted) {
      return new FerryError(
        'ERR_FERRY_REFUSED',
        this.encrypted ? 'plain frame on an encrypted channel: refused (no downgrade)' : 'encrypted frame on a plain channel: modes disagree',
      );
    }
    return null;
  }

  private checkFrame(conn: Connection, h: FrameHeader): FerryError | null {
    if (h.connectionId !== conn.recvId) {
      return new FerryError('ERR_FERRY_SEQUENCE', `frame of connection ${h.connectionId >>> 0} arrived on connection ${conn.recvId}: replayed`);
    }
    if (h.sequence !== conn.nextRecvSequence) {
      return new FerryError(
        'ERR_FERRY_SEQUENCE',
        `frame sequence ${h.sequence} on connection ${conn.id}, expected ${conn.nextRecvSequence}: replayed, reordered or dropped`,
      );
    }
    conn.nextRecvSequence++;
    const modeError = this.checkMode(h);
    if (modeError) return modeError;
    if (h.type === FrameType.HELLO) return new FerryError('ERR_FERRY_FRAME', 'a second HELLO on an open connection');
    return null;
  }

  private scheduleOpen(): void {
    if (this.opening || this.openQueue.length === 0 || this.error) return;
    this.opening = true;
    queueMicrotask(() => {
      this.openAll().then(
        () => {
          this.opening = false;
          this.scheduleOpen();
        },
        (err) => {
          this.opening = false;
          this.fail(toFerryError(err, 'ERR_FERRY_INTERNAL'));
        },
      );
    });
  }

  private async openAll(): Promise<void> {
    while (this.openQueue.length > 0 && !this.error) {
      const batch = this.takeBatch(this.openQueue, (o) => o.frame.header.payloadLength);
      let payloads: Uint8Array[];
      const placements: (Placement | null)[] = [];
      if (this.encrypted) {
        if (!this.key) return;
        const ivs = batch.map(({ frame }) => this.ivFor(frame.header.connectionId, frame.header.sequence));
        const claimed = new Set<number>();
        for (let i = 0; i < batch.length; i++) placements.push(await this.placement(batch[i]!.frame, ivs[i]!, claimed));
        if (this.error || !this.key) return;
        const jobs = batch.map(({ frame }, i) => ({
          iv: ivs[i]!,
          aad: frame.aad,
          input: frame.body,
          output: placements[i]?.segments ?? this.payloadMemory(frame.header),
        }));
        try {
          payloads = (await this.key.openBatch(jobs, this.batchOptions)).map((p, i) => placements[i]?.payload ?? p);
        } catch (err) {
          const e = toFerryError(err, 'ERR_FERRY_AUTH');
          const index = e.detail?.jobIndex;
          const bad = index === undefined ? undefined : batch[index]?.frame.header;
          const where = bad ? `: ${FRAME_TYPE_NAMES[bad.type]} sequence ${bad.sequence} on connection ${bad.connectionId & 0x7fffffff}` : '';
          this.fail(new FerryError(e.code, `frame failed authentication${where} (tampered, forged or of another migration)`));
          return;
        }
      } else {
        payloads = batch.map(({ frame }) => {
          const body = frame.body.subarray(0, frame.header.payloadLength);
          if (frame.target) return frame.target;
          if (!this.consumerAllocates || frame.header.type !== FrameType.DATA) return body;
          // The consumer supplies memory: copy into it, so the frame's buffer can be used again.
          const out = this.payloadMemory(frame.header);
          out.set(body);
          return out;
        });
      }
      if (this.error) return;
      for (let i = 0; i < batch.length && !this.error; i++) this.onFrame(batch[i]!.frame, payloads[i]!, placements[i] != null);
      if (this.encrypted || this.consumerAllocates) for (const { frame } of batch) if (frame.gathered) this.pool.give(frame.gathered);
    }
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
    const key = this.key;
    if (!key) return null;
    let placed: Placement | null;
    try {
      placed = await this.placePayload(h.messageType, h.payloadLength, (offset, length) => key.peek(iv, frame.body, offset, length));
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

  private onFrame(frame: RawFrame, payload: Uint8Array, placed = false): void {
    const h = frame.header;
    switch (h.type) {
      case FrameType.DATA:
        this.onMessage(h, payload, placed);
        break;
      case FrameType.ACK:
        this.onAck(h.messageNumber, (h.flags & Flag.END_SEEN) !== 0);
        break;
      case FrameType.END:
        this.onEnd(h.messageNumber);
        break;
      case FrameType.ABORT:
        this.fail(new FerryError('ERR_FERRY_ABORTED', `the peer aborted the channel: ${Buffer.from(payload).toString('utf8')}`));
        break;
      default:
        this.fail(new FerryError('ERR_FERRY_FRAME', `unexpected ${FRAME_TYPE_NAMES[h.type]} frame`));
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
      this.fail(new FerryError('ERR_FERRY_SEQUENCE', `message ${n} after the peer's END at ${this.peerEndTotal}`));
      return;
    }
    const length = h.payloadLength;
    if (this.bufferedBytes + length > this.options.windowBytes + MAX_PAYLOAD_BYTES) {
      this.fail(new FerryError('ERR_FERRY_SEQUENCE', `the peer overran the ${this.options.windowBytes}-byte window`));
      return;
    }
    this.reorder.set(n, { message: placed ? { type: h.messageType, payload, placed: true } : { type: h.messageType, payload }, length });
    this.bufferedBytes += length;
    if (n > this.highestReceived) this.highestReceived = n;
    this.stats.bytesReceived += length;
    this.stats.messagesReceived++;
    this.wakeReceivers();
  }

  private takeNext(): ChannelMessage | null | undefined {
    const m = this.reorder.get(this.nextDeliver);
    if (m) {
      this.reorder.delete(this.nextDeliver++);
      this.bufferedBytes -= m.length;
      this.deliveredSinceAck += m.length;
      this.scheduleAck();
      return m.message;
    }
    if (this.peerEndTotal !== null && this.nextDeliver === this.peerEndTotal) return null;
    return undefined;
  }

  private wakeReceivers(): void {
    while (this.receiveWaiters.length > 0) {
      const next = this.takeNext();
      if (next === undefined) return;
      this.receiveWaiters.shift()!.resolve(next);
    }
  }

  private onAck(count: number, endSeen: boolean): void {
    if (count > this.nextNumber) {
      this.fail(new FerryError('ERR_FERRY_SEQUENCE', `the peer acknowledged ${count} messages; only ${this.nextNumber} were sent`));
      return;
    }
    if (endSeen && !this.endRequested) {
      this.fail(new FerryError('ERR_FERRY_SEQUENCE', 'the peer acknowledged an END that was never sent'));
      return;
    }
    if (count > this.peerAcked) {
      this.peerAcked = count;
      while (this.unackedHead < this.unacked.length && this.unacked[this.unackedHead]!.number < count) {
        const m = this.unacked[this.unackedHead++]!;
        this.inflightBytes -= m.payloadLength;
        // Acknowledged: the peer has every byte, so no write of this buffer can still be pending.
        if (!m.retransmitted) this.pool.give(m.frame);
      }
      if (this.unackedHead > 1024 && this.unackedHead * 2 > this.unacked.length) {
        this.unacked.splice(0, this.unackedHead);
        this.unackedHead = 0;
      }
      this.retransmitQueue = this.retransmitQueue.filter((m) => m.number >= count);
      this.drainAdmit();
    }
    if (endSeen) this.peerSawEnd = true;
    this.checkDone();
  }

  private onEnd(total: number): void {
    if (total < this.nextDeliver || total <= this.highestReceived || (this.peerEndTotal !== null && this.peerEndTotal !== total)) {
      this.fail(new FerryError('ERR_FERRY_SEQUENCE', `the peer's END names ${total} messages, which contradicts what arrived`));
      return;
    }
    this.peerEndTotal = total;
    this.wakeReceivers();
    this.sendAckNow();
  }

  private scheduleAck(): void {
    if (this.deliveredSinceAck >= this.options.windowBytes / 8) {
      this.sendAckNow();
      return;
    }
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      this.sendAckNow();
    }, ACK_DELAY_MS);
  }

  private sendAckNow(conn = this.ackConnection()): void {
    if (!conn || this.error) return;
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.deliveredSinceAck = 0;
    const endSeen = this.peerEndTotal !== null;
    const upTo = this.nextDeliver;
    void this.sendControl(conn, FrameType.ACK, endSeen ? Flag.END_SEEN : 0, upTo).then(() => {
      // Counts only once the ACK is on its way: closing before that would strand the peer.
      if (conn.state !== 'open') return;
      this.ackedUpTo = Math.max(this.ackedUpTo, upTo);
      this.ackedEnd ||= endSeen;
      this.checkDone();
    });
  }

  /** ACKs take the connection with the least queued, so they do not wait behind bulk data. */
  private ackConnection(): Connection | null {
    return this.pickConnection();
  }

  private onTick(): void {
    const now = performance.now();
    for (const conn of [...this.conns]) {
      if (conn.state === 'handshake' && now - conn.openedAt > this.options.handshakeTimeoutMs) {
        this.handshakeTimedOut(conn);
      } else if (conn.state === 'open') {
        if (now - conn.lastHeard > this.options.stallTimeoutMs) this.lose(conn, `nothing heard for ${this.options.stallTimeoutMs} ms`);
        else if (now - conn.lastSent > this.options.keepaliveMs && conn.load === 0) this.sendAckNow(conn);
      }
    }
  }

  protected abstract handshakeTimedOut(conn: Connection): void;

  /** Both directions are over: our END acknowledged, the peer's END and all before it delivered. */
  private checkDone(): void {
    if (this.error || this.finished) return;
    const sentAll = this.endRequested && this.sealQueue.length === 0 && this.admitQueue.length === 0 && this.peerAcked === this.nextNumber;
    if (sentAll && this.peerSawEnd) for (const w of this.endWaiters.splice(0)) w.resolve();
    const receivedAll = this.peerEndTotal !== null && this.nextDeliver === this.peerEndTotal && this.ackedUpTo === this.peerEndTotal && this.ackedEnd;
    if (sentAll && this.peerSawEnd && receivedAll) {
      this.finished = true;
      this.stopTimers();
      for (const conn of this.conns) conn.close(true);
      this.conns.clear();
      this.destroyKey();
      this.onFinished();
    }
  }

  protected onFinished(): void {}
}
