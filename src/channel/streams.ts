/**
 * Byte streams over a channel: each local socket attached here becomes one logical two-way stream
 * to the peer, carried in the channel's messages, so it shares the channel's encryption, ordering,
 * exactly-once delivery and failover between networks. This is how a QEMU migration (its main
 * connection with the return path, each multifd connection, each NBD disk export) crosses ferry's
 * channel: nothing of a stream is lost, duplicated or reordered, because the channel is not.
 *
 * Every stream has its own credit window, as HTTP/2 and QUIC streams do: a side sends a stream's
 * bytes only while the peer has granted room for them, and grants more as it writes them to its
 * own socket. So one stream whose reader is slow (a QEMU thread waiting for another stream) never
 * blocks the others in the channel's single ordered sequence, and each side holds at most a window
 * of each stream in memory. A stream's reader stalls its writer, across the channel, like a socket.
 *
 *   OPEN   u32 stream              the peer attaches a socket for it, streams in order of opening
 *   DATA   u32 stream, bytes       within the credit the peer granted
 *   CREDIT u32 stream, u32 bytes   room for that many more bytes
 *   FIN    u32 stream              no more bytes from this side (the local socket ended)
 *
 * Local sockets must be half-open capable (allowHalfOpen), since each direction ends on its own.
 *
 * Message types STREAM_MSG.* are the mux's; an engine using it picks its own others.
 */
import type { Socket } from 'node:net';
import { FerryError } from '../errors.js';
import type { Channel, ChannelMessage } from './types.js';

export const STREAM_MSG = { OPEN: 200, DATA: 201, CREDIT: 202, FIN: 203 } as const;

/** Bytes of one DATA message at most (with its 4-byte header, well inside the channel's frame). */
export const MAX_STREAM_DATA_BYTES = 1024 * 1024;
/** Streams of one mux at most: QEMU's main connection, 16 multifd channels, a few disks. */
export const MAX_STREAMS = 64;
export const MIN_STREAM_WINDOW = 256 * 1024;
export const MAX_STREAM_WINDOW = 1024 * 1024 * 1024;

export interface StreamStats {
  id: number;
  bytesSent: number;
  bytesReceived: number;
  /** Times the sender ran out of credit and waited (the peer's reader was the slower). */
  creditStalls: number;
}

export interface StreamMuxOptions {
  /** Bytes of each stream either side may have in flight or buffered; both sides must agree. */
  windowBytes: number;
  /** Told when a stream's both directions have ended. */
  onStreamEnd?: (stats: StreamStats) => void;
}

class Stream {
  bytesSent = 0;
  bytesReceived = 0;
  creditStalls = 0;
  /** Bytes we may still send. */
  credit: number;
  /** Bytes written to our socket since we last granted the peer credit for them. */
  ungranted = 0;
  /** Bytes read from our socket, not yet in a message. */
  pending: Buffer[] = [];
  pendingBytes = 0;
  flushing = false;
  readEnded = false;
  finSent = false;
  finReceived = false;
  socket: Socket | null = null;
  /** DATA that arrived before the socket was attached (within the window). */
  early: Buffer[] = [];
  ended = false;

  constructor(
    readonly id: number,
    window: number,
  ) {
    this.credit = window;
  }
}

const u32 = (n: number): Buffer => {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n);
  return b;
};

export class StreamMux {
  private readonly streams = new Map<number, Stream>();
  private failure: FerryError | null = null;
  private readonly window: number;
  /** Each message queued on the channel in the order its stream produced it. */
  private sendChain: Promise<void> = Promise.resolve();

  constructor(
    private readonly channel: Channel,
    private readonly options: StreamMuxOptions,
  ) {
    if (!Number.isInteger(options.windowBytes) || options.windowBytes < MIN_STREAM_WINDOW || options.windowBytes > MAX_STREAM_WINDOW) {
      throw new FerryError('ERR_FERRY_INPUT', `stream window must be ${MIN_STREAM_WINDOW} to ${MAX_STREAM_WINDOW} bytes`);
    }
    this.window = options.windowBytes;
  }

  /** The sticky failure, once a stream broke the rules or the channel failed. */
  get error(): FerryError | null {
    return this.failure;
  }

  stats(): StreamStats[] {
    return [...this.streams.values()].map((s) => ({
      id: s.id,
      bytesSent: s.bytesSent,
      bytesReceived: s.bytesReceived,
      creditStalls: s.creditStalls,
    }));
  }

  /** Opens stream `id` to the peer with `socket` as its local end (the side that accepted it). */
  open(id: number, socket: Socket): void {
    const s = this.newStream(id);
    this.queue(STREAM_MSG.OPEN, [u32(id)]);
    this.attach(s, socket);
  }

  /**
   * Attaches the local end of a stream the peer opened. Call it in the order the OPEN messages came
   * (onOpen), once the socket is connected.
   */
  accept(id: number, socket: Socket): void {
    const s = this.streams.get(id);
    if (!s || s.socket) throw new FerryError('ERR_FERRY_INTERNAL', `stream ${id} is not waiting for its socket`);
    this.attach(s, socket);
  }

  /**
   * Takes a channel message if it is one of the mux's: returns 'open' with the stream id for an
   * OPEN (the caller connects a socket and calls accept), true for the others, false otherwise.
   * A message that breaks the stream rules fails the mux (and the caller's migration) with a coded error.
   */
  handle(message: ChannelMessage): { open: number } | boolean {
    const { type, payload } = message;
    if (type < STREAM_MSG.OPEN || type > STREAM_MSG.FIN) return false;
    if (payload.length < 4) this.fail(new FerryError('ERR_FERRY_FRAME', `stream message ${type} of ${payload.length} bytes`));
    const view = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
    const id = view.readUInt32BE(0);
    if (type === STREAM_MSG.OPEN) {
      if (payload.length !== 4) this.fail(new FerryError('ERR_FERRY_FRAME', 'OPEN carries only a stream id'));
      this.newStream(id);
      return { open: id };
    }
    const s = this.streams.get(id);
    if (!s) this.fail(new FerryError('ERR_FERRY_FRAME', `message for stream ${id}, which was never opened`));
    if (type === STREAM_MSG.DATA) this.onData(s, view.subarray(4));
    else if (type === STREAM_MSG.CREDIT) this.onCredit(s, view);
    else this.onFin(s, view);
    return true;
  }

  /** Fails every stream: sockets destroyed, later messages refused. */
  fail(err: FerryError): never {
    this.abort(err);
    throw err;
  }

  abort(err: FerryError): void {
    if (this.failure) return;
    this.failure = err;
    for (const s of this.streams.values()) s.socket?.destroy();
  }

  private newStream(id: number): Stream {
    if (this.failure) throw this.failure;
    if (this.streams.has(id)) this.fail(new FerryError('ERR_FERRY_FRAME', `stream ${id} opened twice`));
    if (this.streams.size >= MAX_STREAMS) this.fail(new FerryError('ERR_FERRY_FRAME', `more than ${MAX_STREAMS} streams`));
    const s = new Stream(id, this.window);
    this.streams.set(id, s);
    return s;
  }

  private attach(s: Stream, socket: Socket): void {
    // Each direction ends on its own (FIN): a socket that closed its writing side when its peer
    // ended reading would drop what the other direction still carries.
    if (!socket.allowHalfOpen) throw new FerryError('ERR_FERRY_INTERNAL', 'a stream socket must allow half-open (allowHalfOpen: true)');
    s.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onLocalData(s, chunk));
    socket.on('end', () => {
      s.readEnded = true;
      this.flush(s);
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      // A socket that closed without its end (QEMU closed it, or failed): nothing more comes from it.
      if (!s.readEnded) {
        s.readEnded = true;
        this.flush(s);
      }
      this.maybeEnded(s);
    });
    for (const b of s.early.splice(0)) this.writeLocal(s, b);
    if (s.finReceived) socket.end();
  }

  private onLocalData(s: Stream, chunk: Buffer): void {
    s.pending.push(chunk);
    s.pendingBytes += chunk.length;
    if (s.pendingBytes >= s.credit) {
      // Out of credit: stop reading, so the writer on our side waits, as it would on a full socket.
      s.socket!.pause();
      s.creditStalls++;
    }
    this.flush(s);
  }

  /** Sends what is pending, in messages the credit allows; after the socket ended, FIN. */
  private flush(s: Stream): void {
    if (s.flushing || this.failure) return;
    s.flushing = true;
    // Gather what arrives in the same turn of the event loop into one message.
    setImmediate(() => {
      s.flushing = false;
      while (s.pendingBytes > 0 && s.credit > 0) {
        const take = Math.min(s.pendingBytes, s.credit, MAX_STREAM_DATA_BYTES);
        const parts = this.takePending(s, take);
        s.credit -= take;
        s.bytesSent += take;
        this.queue(STREAM_MSG.DATA, [u32(s.id), ...parts]);
      }
      if (s.pendingBytes < s.credit) s.socket?.resume();
      if (s.readEnded && s.pendingBytes === 0 && !s.finSent) {
        s.finSent = true;
        this.queue(STREAM_MSG.FIN, [u32(s.id)]);
        this.maybeEnded(s);
      }
    });
  }

  private takePending(s: Stream, bytes: number): Buffer[] {
    const out: Buffer[] = [];
    let left = bytes;
    while (left > 0) {
      const head = s.pending[0]!;
      if (head.length <= left) {
        out.push(head);
        s.pending.shift();
        left -= head.length;
      } else {
        out.push(head.subarray(0, left));
        s.pending[0] = head.subarray(left);
        left = 0;
      }
    }
    s.pendingBytes -= bytes;
    return out;
  }

  private onData(s: Stream, bytes: Buffer): void {
    if (s.finReceived) this.fail(new FerryError('ERR_FERRY_FRAME', `data on stream ${s.id} after its FIN`));
    const buffered = s.bytesReceived - this.grantedBack(s);
    if (buffered + bytes.length > this.window) this.fail(new FerryError('ERR_FERRY_FRAME', `stream ${s.id} sent beyond its credit`));
    s.bytesReceived += bytes.length;
    // The channel hands each message a buffer of its own: held until the socket has taken it.
    if (s.socket) this.writeLocal(s, bytes);
    else s.early.push(bytes);
  }

  /** Bytes of this stream the peer knows we took: received minus what we still hold. */
  private readonly granted = new Map<number, number>();
  private grantedBack(s: Stream): number {
    return this.granted.get(s.id) ?? 0;
  }

  private writeLocal(s: Stream, bytes: Buffer): void {
    const socket = s.socket!;
    if (socket.destroyed) return; // its end is reported by 'close'; what the peer sends now has nowhere to go
    socket.write(bytes, (err) => {
      if (err || this.failure) return;
      s.ungranted += bytes.length;
      // Grant in steps of an eighth of the window: few CREDIT messages, the writer never starved.
      if (s.ungranted >= this.window / 8 || s.ungranted === s.bytesReceived - this.grantedBack(s)) {
        const n = s.ungranted;
        s.ungranted = 0;
        this.granted.set(s.id, this.grantedBack(s) + n);
        const body = Buffer.allocUnsafe(8);
        body.writeUInt32BE(s.id, 0);
        body.writeUInt32BE(n, 4);
        this.queue(STREAM_MSG.CREDIT, [body]);
      }
    });
  }

  private onCredit(s: Stream, view: Buffer): void {
    if (view.length !== 8) this.fail(new FerryError('ERR_FERRY_FRAME', 'CREDIT is a stream id and a count'));
    const n = view.readUInt32BE(4);
    if (s.credit + n > this.window) this.fail(new FerryError('ERR_FERRY_FRAME', `stream ${s.id} granted more credit than its window`));
    s.credit += n;
    this.flush(s);
  }

  private onFin(s: Stream, view: Buffer): void {
    if (view.length !== 4) this.fail(new FerryError('ERR_FERRY_FRAME', 'FIN carries only a stream id'));
    if (s.finReceived) this.fail(new FerryError('ERR_FERRY_FRAME', `stream ${s.id} ended twice`));
    s.finReceived = true;
    s.socket?.end();
    this.maybeEnded(s);
  }

  private maybeEnded(s: Stream): void {
    if (s.ended || !s.finSent || !s.finReceived) return;
    s.ended = true;
    this.options.onStreamEnd?.({ id: s.id, bytesSent: s.bytesSent, bytesReceived: s.bytesReceived, creditStalls: s.creditStalls });
  }

  /** True once every stream opened so far has ended both ways. */
  get idle(): boolean {
    return [...this.streams.values()].every((s) => s.ended);
  }

  private queue(type: number, parts: Buffer[]): void {
    this.sendChain = this.sendChain.then(() => {
      if (this.failure) return;
      return this.channel.send(type, parts).catch((err: unknown) => {
        this.abort(err instanceof FerryError ? err : new FerryError('ERR_FERRY_NETWORK', String(err)));
      });
    });
  }
}
