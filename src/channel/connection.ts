/**
 * One TCP connection of a channel: its ids, its two sequence counters, the incremental parser on
 * the way in, and on the way out a reorder slot so frames sealed concurrently still leave in
 * sequence order.
 */
import type { Socket } from 'node:net';
import type { RawFrame } from './decoder.js';
import { FrameReader, type BodyTarget } from './reader.js';
import { DIRECTION_BIT } from './wire.js';
import type { Pacer } from './pacer.js';

export type ConnectionState = 'handshake' | 'open' | 'closed';

export class Connection {
  state: ConnectionState = 'handshake';
  /** Source-chosen id (direction bit clear); 0 until a destination has read the HELLO. */
  id = 0;
  readonly reader: FrameReader;
  nextRecvSequence = 0;
  /** Key epoch of the last frame framed on this connection after its HELLO; null before the first. */
  sendEpoch: number | null = null;
  /** Key epoch of the peer's last frame on it after its HELLO; null before the first. */
  recvEpoch: number | null = null;
  private nextSendSequence = 0;
  private nextWriteSequence = 0;
  private readonly sealed = new Map<number, { frame: Buffer; cost: number }>();
  /** Bytes given to this connection and not yet handed to the kernel: picks the least loaded. */
  private pendingBytes = 0;
  lastHeard = performance.now();
  lastSent = performance.now();
  readonly openedAt = performance.now();
  /** Frames that came behind the peer's HELLO while it was being verified; null once open. */
  held: RawFrame[] | null = null;

  constructor(
    readonly socket: Socket,
    /** True on the destination (accepting) side: its frames carry the direction bit. */
    readonly accepting: boolean,
    readonly network: string,
    private readonly pacer: Pacer,
    private readonly counters: { wireBytesSent: number },
    allocate?: (size: number) => Buffer,
    bodyTarget?: BodyTarget,
  ) {
    this.reader = new FrameReader(allocate, bodyTarget);
    socket.setNoDelay(true);
  }

  get sendId(): number {
    return (this.accepting ? this.id | DIRECTION_BIT : this.id) >>> 0;
  }

  get recvId(): number {
    return (this.accepting ? this.id : this.id | DIRECTION_BIT) >>> 0;
  }

  get load(): number {
    return this.pendingBytes + this.socket.writableLength;
  }

  get usable(): boolean {
    return this.state === 'open';
  }

  /** The next sequence number to seal a frame with. */
  reserveSequence(): number {
    return this.nextSendSequence++;
  }

  /** Counts a frame's bytes against this connection from the moment it is assigned. */
  assign(bytes: number): void {
    this.pendingBytes += bytes;
  }

  /** Hands over the sealed frame of sequence `seq`; frames leave in sequence order. */
  put(seq: number, frame: Buffer, cost: number): void {
    if (this.state === 'closed') return;
    this.sealed.set(seq, { frame, cost });
    for (let next = this.sealed.get(this.nextWriteSequence); next; next = this.sealed.get(this.nextWriteSequence)) {
      this.sealed.delete(this.nextWriteSequence++);
      this.pacer.push(this, next.frame, next.cost);
    }
  }

  /** Called by the pacer when the frame's turn has come. */
  write(frame: Buffer): void {
    this.pendingBytes -= frame.length;
    if (this.state === 'closed') return;
    this.counters.wireBytesSent += frame.length;
    this.lastSent = performance.now();
    this.socket.write(frame);
  }

  /** Bytes read elsewhere (a 'data' chunk, the router's head): the frames they complete. */
  parse(chunk: Buffer): RawFrame[] {
    const frames: RawFrame[] = [];
    this.reader.push(chunk, frames);
    this.lastHeard = performance.now();
    return frames;
  }

  /** `n` bytes were read into the reader's buffer: the frames they complete. */
  received(n: number): RawFrame[] {
    const frames: RawFrame[] = [];
    this.reader.read(n, frames);
    this.lastHeard = performance.now();
    return frames;
  }

  /**
   * Closes for good: at once, or gracefully — what the pacer still holds for it goes out first,
   * then `last` (a final frame, if any), then FIN.
   */
  close(graceful: boolean, last?: Buffer): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.sealed.clear();
    const queued = this.pacer.drop(this);
    if (!graceful) {
      this.socket.destroy();
      return;
    }
    for (const frame of queued) this.socket.write(frame);
    if (last) this.socket.end(last);
    else this.socket.end();
    // A peer that never reads must not hold the socket open.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }
}
