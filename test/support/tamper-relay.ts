/**
 * A man in the middle for the tamper tests: a TCP relay that parses the source's frames (by their
 * header's lengths only — it has no key) and lets a test drop, alter, repeat, swap or add frames on
 * their way to the destination. The destination's frames pass untouched.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { frameBytes, parseHeader, HEADER_BYTES, type FrameHeader } from '../../src/channel/wire.js';

export interface SeenFrame {
  /** Which relayed connection (0, 1, ...), in the order they were accepted. */
  conn: number;
  /** Frame index on that connection: 0 is the HELLO. */
  index: number;
  header: FrameHeader;
  bytes: Buffer;
}

/** Returns what to forward instead of the frame (empty: drop it), or 'truncate' to cut the link there. */
export type Tamper = (frame: SeenFrame, relay: TamperRelay) => Buffer[] | 'truncate';

export class TamperRelay {
  readonly frames: SeenFrame[] = [];
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly upstreams: Socket[] = [];
  address = '';

  constructor(
    private readonly target: { host: string; port: number },
    private readonly tamper: Tamper,
  ) {}

  async start(): Promise<this> {
    this.server = createServer({ noDelay: true, pauseOnConnect: true }, (client) => this.relay(client));
    await new Promise<void>((r) => this.server!.listen({ host: '127.0.0.1', port: 0 }, r));
    const a = this.server.address() as { port: number };
    this.address = `127.0.0.1:${a.port}`;
    return this;
  }

  /** Writes bytes on relayed connection `conn` towards the destination. */
  inject(conn: number, bytes: Buffer): void {
    this.upstreams[conn]?.write(bytes);
  }

  cut(): void {
    this.server?.close();
    for (const s of this.sockets) s.destroy();
  }

  private relay(client: Socket): void {
    const conn = this.upstreams.length;
    const [host, port] = [this.target.host, this.target.port];
    const upstream = connect({ host, port, noDelay: true });
    this.upstreams.push(upstream);
    this.sockets.add(client).add(upstream);
    const kill = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', kill).on('close', kill);
    upstream.on('error', kill).on('close', kill);
    upstream.once('connect', () => client.resume());
    upstream.on('data', (d) => client.write(d));
    let pending = Buffer.alloc(0);
    let index = 0;
    client.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= HEADER_BYTES) {
        const header = parseHeader(pending);
        const n = frameBytes(header);
        if (pending.length < n) return;
        const frame: SeenFrame = { conn, index: index++, header, bytes: Buffer.from(pending.subarray(0, n)) };
        pending = pending.subarray(n);
        this.frames.push(frame);
        const out = this.tamper(frame, this);
        if (out === 'truncate') {
          this.cut();
          return;
        }
        for (const b of out) upstream.write(b);
      }
    });
  }
}

/** A copy of `bytes` with one bit flipped. */
export function flipBit(bytes: Buffer, offset: number, bit = 0): Buffer {
  const b = Buffer.from(bytes);
  b[offset]! ^= 1 << bit;
  return b;
}
