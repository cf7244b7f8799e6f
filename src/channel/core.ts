/**
 * The channel's core, the same on both sides: the Channel contract, over a sending half
 * (sender.ts), a receiving half (receiver.ts), the ACK policy (ack-policy.ts) and the frame crypto
 * (frame-crypto.ts) that both halves share; here are the connections (wiring, HELLO, loss), the
 * timers, END of both halves together, and the sticky error. How connections come about differs
 * (the source dials, the destination adopts) and lives in source.ts and destination.ts.
 * docs/protocol.md gives the argument.
 */
import type { Socket } from 'node:net';
import { FerryError, toFerryError } from '../errors.js';
import type { Direction, KeySchedule } from '../crypto/key-schedule.js';
import type { Channel, ChannelMessage, ChannelMode, ChannelSpec, ChannelStats } from './types.js';
import { Connection } from './connection.js';
import type { RawFrame } from './decoder.js';
import { Pacer } from './pacer.js';
import { FramePool } from './frame-pool.js';
import { readInPlace } from './reader.js';
import { channelSettings, keyBudget, type ChannelOptions, type ChannelSettings } from './options.js';
import { FrameCrypto } from './frame-crypto.js';
import { AckPolicy, type AckHost } from './ack-policy.js';
import { Sender, type SenderHost } from './sender.js';
import { Receiver, type ReceiverHost } from './receiver.js';
import { checkHello, sealHello } from './hello.js';
import { Flag, FrameType, MAX_ABORT_BYTES, MAX_PAYLOAD_BYTES, type FrameHeader } from './wire.js';

/**
 * What the peer's bytes did wrong on an open connection (a frame that failed its tag, a sequence
 * or framing violation). The channel fails as for any error, but tells the peer why first, with
 * an authenticated ABORT, as a TLS alert does: otherwise the peer sees only connections closing,
 * takes them for a failing network and redials until its reconnect timeout, then reports the
 * network instead of the tampering.
 */
const PEER_FAULTS: ReadonlySet<string> = new Set(['ERR_FERRY_AUTH', 'ERR_FERRY_SEQUENCE', 'ERR_FERRY_FRAME']);

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
    bytesAcknowledged: 0,
    failovers: 0,
    network: null,
    connectionsRejected: 0,
    retransmittedMessages: 0,
    retransmittedBytes: 0,
    duplicatesDropped: 0,
    cryptoThreadsPeak: 0,
    keyEpochSent: 0,
    keyEpochReceived: 0,
  };

  protected readonly conns = new Set<Connection>();
  protected readonly pacer: Pacer;
  protected readonly options: ChannelSettings;
  private readonly pool: FramePool;
  private readonly crypto: FrameCrypto;
  private readonly acks: AckPolicy;
  private readonly sender: Sender;
  private readonly receiver: Receiver;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private finished = false;

  /** `direction`: this side's sending, 0 source → destination, 1 destination → source. */
  protected constructor(spec: ChannelSpec, key: KeySchedule | null, options: ChannelOptions, direction: Direction) {
    this.migrationId = spec.migrationId;
    this.mode = spec.mode;
    this.cryptoThreads = spec.cryptoThreads ?? null;
    this.crypto = new FrameCrypto(
      key,
      direction,
      spec.nonce,
      {
        threads: spec.cryptoThreads,
        onThreads: (n) => {
          if (n > this.stats.cryptoThreadsPeak) this.stats.cryptoThreadsPeak = n;
        },
        keyBudgetBytes: keyBudget(options),
        onSendEpoch: (epoch) => this.sendKeyUpdates(epoch),
      },
      () => this.error ?? new FerryError('ERR_FERRY_ABORTED', 'channel closed'),
    );
    this.options = channelSettings(options);
    const { windowBytes } = this.options;
    this.pacer = new Pacer(spec.maxBytesPerSecond, MAX_PAYLOAD_BYTES);
    this.pool = new FramePool(windowBytes + 2 * MAX_PAYLOAD_BYTES);
    // Inside the host's getters `this` is the host: they read the core through this name.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const core = this;
    // What the halves and the ACK policy take from the core: each names its own part of it.
    const host: SenderHost & ReceiverHost & AckHost = {
      get error() {
        return core.error;
      },
      fail: (err) => (PEER_FAULTS.has(err.code) ? this.abort(err) : this.fail(err)),
      pickConnection: () => this.pickConnection(),
      checkDone: () => this.checkDone(),
      connections: () => this.conns,
      sendEnd: (conn, total) => this.sendControl(conn, FrameType.END, 0, total),
      sendAck: (conn, endSeen, upTo) => this.sendControl(conn, FrameType.ACK, endSeen ? Flag.END_SEEN : 0, upTo),
      position: () => ({ delivered: this.receiver.delivered, endSeen: this.receiver.endSeen }),
      onAck: (count, endSeen) => this.sender.onAck(count, endSeen),
    };
    this.acks = new AckPolicy(host, windowBytes);
    this.sender = new Sender(host, this.crypto, this.pool, this.stats, { windowBytes, copy: options.copy ?? null });
    this.receiver = new Receiver(host, this.crypto, this.pool, this.acks, this.stats, {
      windowBytes,
      allocatePayload: options.allocatePayload,
      placePayload: options.placePayload,
    });
    const tick = Math.max(10, Math.min(this.options.keepaliveMs, this.options.handshakeTimeoutMs / 4, this.options.stallTimeoutMs / 4));
    this.keepaliveTimer = setInterval(() => this.onTick(), tick);
    this.keepaliveTimer.unref();
  }

  // ---------------------------------------------------------------- the Channel contract

  send(type: number, payload: Uint8Array | readonly Uint8Array[]): Promise<void> {
    return this.sender.send(type, payload);
  }

  receive(): Promise<ChannelMessage | null> {
    return this.receiver.receive();
  }

  end(): Promise<void> {
    return this.sender.end();
  }

  abort(reason: FerryError): void {
    if (this.error) return;
    // Tell the peer why, authenticated, on every connection that can carry it, then close.
    const text = Buffer.from(`${reason.code}: ${reason.message}`, 'utf8').subarray(0, MAX_ABORT_BYTES);
    const targets = [...this.conns].filter((c) => c.usable);
    const frames = targets.map((conn) => ({
      conn,
      f: this.crypto.frame(conn, FrameType.ABORT, { messageNumber: 0, payloadLength: text.length }),
    }));
    const key = this.crypto.detach();
    this.fail(reason, new Set(targets));
    void Promise.all(
      frames.map(async ({ conn, f }) => {
        await this.crypto.sealOne(f, conn.sendId, text, key);
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
  /** Payload bytes lost connections carried unacknowledged, waiting to go again. */
  protected get resendBytes(): number {
    return this.sender.resendBytes;
  }

  protected get liveConnections(): number {
    let n = 0;
    for (const c of this.conns) if (c.state !== 'closed') n++;
    return n;
  }

  protected newConnection(socket: Socket, accepting: boolean, network: string): Connection {
    const bodyTarget = this.receiver.bodyTarget(() => conn.state === 'open');
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
    const inPlace = readInPlace(
      conn.socket,
      conn.reader,
      (chunk) => this.onData(conn, chunk),
      (n) => this.onRead(conn, n),
    );
    if (!inPlace) conn.socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    // The router paused it; a 'data' listener alone does not restart a paused stream.
    conn.socket.resume();
  }

  /** A HELLO for `conn`, naming where this side's receiving resumes. */
  protected sealHello(conn: Connection): Promise<Buffer> {
    return sealHello(this.crypto, conn, {
      migrationId: this.migrationId,
      windowBytes: this.options.windowBytes,
      resumeAt: this.receiver.delivered,
    });
  }

  /** A peer's HELLO checked (see hello.ts): the error that refuses it, or the window it announces. */
  protected checkHello(frame: RawFrame): Promise<FerryError | number> {
    return checkHello(this.crypto, frame, { migrationId: this.migrationId, numbered: this.sender.numbered });
  }

  /** The connection passed its HELLO exchange: put it to work. */
  protected opened(conn: Connection, hello: FrameHeader, peerWindow: number): void {
    conn.state = 'open';
    conn.nextRecvSequence = 1;
    this.stats.connectionsOpened++;
    this.stats.network = conn.network;
    this.sender.connected(peerWindow, hello.messageNumber);
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
    if (wasOpen) this.sender.requeue(conn);
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
    this.sender.fail(err);
    this.receiver.fail(err);
    this.crypto.destroy();
    this.pool.clear();
    this.onFailed(err);
  }

  protected onFailed(_err: FerryError): void {}

  protected stopTimers(): void {
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = null;
    this.acks.stop();
  }

  protected pickConnection(): Connection | null {
    let best: Connection | null = null;
    for (const c of this.conns) if (c.usable && (!best || c.load < best.load)) best = c;
    return best;
  }

  /**
   * This side's sending moved to key epoch `epoch`: a KEY_UPDATE on every connection that has
   * carried a frame, before anything else of the new epoch, so on each connection the epoch steps
   * by exactly one and only at a KEY_UPDATE (a connection yet to carry a frame starts in the new epoch).
   */
  private sendKeyUpdates(epoch: number): void {
    this.stats.keyEpochSent = epoch;
    for (const conn of this.conns) if (conn.usable && conn.sendEpoch !== null) void this.sendControl(conn, FrameType.KEY_UPDATE, 0, 0);
  }

  /** Seals a control frame (ACK, END, KEY_UPDATE) and queues it on `conn`. */
  private async sendControl(conn: Connection, type: FrameType, flags: number, messageNumber: number): Promise<void> {
    try {
      const f = this.crypto.frame(conn, type, { flags, messageNumber, payloadLength: 0 });
      await this.crypto.sealOne(f, conn.sendId, Buffer.alloc(0));
      conn.put(f.sequence, f.buf, 0);
    } catch (err) {
      this.fail(toFerryError(err, 'ERR_FERRY_INTERNAL'));
    }
  }

  // ---------------------------------------------------------------- bytes in

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
      if (!this.receiver.queue(conn, frame)) return;
    }
    this.receiver.scheduleOpen();
  }

  /** A malformed byte stream: fatal once the connection is bound to the channel, else a refusal. */
  private frameError(conn: Connection, err: FerryError): void {
    if (conn.state === 'open') this.abort(err);
    else this.reject(conn, err);
  }

  /** The side handles HELLO frames (and whatever arrives before its own HELLO exchange is over). */
  protected abstract onHandshakeFrame(conn: Connection, frame: RawFrame): void;

  // ---------------------------------------------------------------- timers and the end

  private onTick(): void {
    const now = performance.now();
    for (const conn of [...this.conns]) {
      if (conn.state === 'handshake' && now - conn.openedAt > this.options.handshakeTimeoutMs) {
        this.handshakeTimedOut(conn);
      } else if (conn.state === 'open') {
        if (now - conn.lastHeard > this.options.stallTimeoutMs) this.lose(conn, `nothing heard for ${this.options.stallTimeoutMs} ms`);
        else if (now - conn.lastSent > this.options.keepaliveMs && conn.load === 0) this.acks.now(conn);
      }
    }
  }

  protected abstract handshakeTimedOut(conn: Connection): void;

  /** Both directions are over: our END acknowledged, the peer's END and all before it delivered. */
  private checkDone(): void {
    if (this.error || this.finished) return;
    const sentAll = this.sender.settleEnd();
    const receivedAll = this.receiver.deliveredAll && this.acks.covers(this.receiver.delivered);
    if (sentAll && receivedAll) {
      this.finished = true;
      this.stopTimers();
      for (const conn of this.conns) conn.close(true);
      this.conns.clear();
      this.crypto.destroy();
      this.onFinished();
    }
  }

  protected onFinished(): void {}
}
