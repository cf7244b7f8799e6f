/**
 * A WAN in user space (this kernel has no netem): a TCP relay that delays every byte by a one-way
 * delay and serialises it at a bandwidth cap, each direction on its own, like a long fat pipe. The
 * cap belongs to the link: all connections through the emulator share it.
 *
 * It reads ahead without waiting for the far side, so a whole bandwidth-delay product is in flight
 * inside the relay, plus a router-sized queue on top; only past that does it stop reading (TCP
 * backpressure then reaches the sender, as a full router queue would). Used by the tests and by
 * `ferry bench channel`.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { FerryError } from '../errors.js';
import { formatNetwork, parseNetwork } from '../channel/network.js';

export interface WanOptions {
  /** Where the relay forwards to, 'host:port'. */
  target: string;
  /** Where it listens; default '127.0.0.1:0'. */
  listen?: string;
  /** One-way delay in milliseconds (RTT = 2 × this). */
  delayMs: number;
  /** Cap per direction in bytes a second; undefined: none. */
  bytesPerSecond?: number;
  /** Bytes queued beyond the bandwidth-delay product before reading stops. Default 4 MiB. */
  queueBytes?: number;
}

export interface WanEmulator {
  /** The address to connect to instead of the target. */
  readonly address: string;
  /** Connections relayed so far. */
  readonly connections: number;
  /** Cuts the link: stops listening and destroys every relayed connection (a network failure). */
  cut(): void;
  /** The link goes silent: connections stay up and new ones are accepted, but nothing gets through. */
  blackhole(): void;
  close(): Promise<void>;
}

/** One direction of the emulated link, shared by every connection through it: the cap is the link's. */
interface Link {
  freeAt: number;
}

interface Pending {
  at: number;
  chunk: Buffer;
}

/** One direction of the link: from `input` to `output`. */
class Pipe {
  private readonly queue: Pending[] = [];
  private head = 0;
  private queued = 0;
  private timer: NodeJS.Timeout | null = null;
  private paused = false;
  private ended = false;
  private readonly limit: number;

  constructor(
    private readonly input: Socket,
    private readonly output: Socket,
    private readonly delayMs: number,
    private readonly rate: number | undefined,
    queueBytes: number,
    private readonly link: Link,
  ) {
    const bdp = rate ? (rate * 2 * delayMs) / 1000 : 0;
    this.limit = bdp + queueBytes;
    input.on('data', (chunk: Buffer) => this.push(chunk));
    input.on('end', () => {
      this.ended = true;
      this.flush();
    });
    output.on('drain', () => this.maybeResume());
  }

  blackholed = false;

  private push(chunk: Buffer): void {
    if (this.blackholed) return;
    const now = performance.now();
    // Serialisation at the cap, then propagation: the model of a fixed-rate link with a delay.
    const serialise = this.rate ? (chunk.length / this.rate) * 1000 : 0;
    this.link.freeAt = Math.max(now, this.link.freeAt) + serialise;
    this.queue.push({ at: this.link.freeAt + this.delayMs, chunk });
    this.queued += chunk.length;
    if (this.queued > this.limit && !this.paused) {
      this.paused = true;
      this.input.pause();
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || this.head >= this.queue.length) return;
    const wait = this.queue[this.head]!.at - performance.now();
    if (wait <= 0) {
      this.timer = setImmediate(() => this.release()) as unknown as NodeJS.Timeout;
    } else {
      this.timer = setTimeout(() => this.release(), wait);
    }
  }

  private release(): void {
    this.timer = null;
    const now = performance.now();
    while (this.head < this.queue.length && this.queue[this.head]!.at <= now + 0.05) {
      const { chunk } = this.queue[this.head++]!;
      this.queued -= chunk.length;
      if (!this.output.destroyed) this.output.write(chunk);
    }
    if (this.head > 4096 || this.head === this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    this.maybeResume();
    this.flush();
    this.schedule();
  }

  private maybeResume(): void {
    if (this.paused && this.queued <= this.limit && this.output.writableLength < 4 * 1024 * 1024) {
      this.paused = false;
      this.input.resume();
    }
  }

  private flush(): void {
    if (!this.ended || this.head < this.queue.length) return;
    if (!this.output.destroyed) this.output.end();
    // Both ways finished: nothing more can pass.
    if (this.input.writableEnded || this.input.destroyed) this.input.destroy();
  }

  stop(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      clearImmediate(this.timer as unknown as NodeJS.Immediate);
    }
    this.timer = null;
  }
}

export async function startWanEmulator(options: WanOptions): Promise<WanEmulator> {
  const target = parseNetwork(options.target);
  const listen = parseNetwork(options.listen ?? '127.0.0.1:0', { listen: true });
  if (!(options.delayMs >= 0)) throw new FerryError('ERR_FERRY_INPUT', 'WAN emulator: delayMs must be ≥ 0');
  const queueBytes = options.queueBytes ?? 4 * 1024 * 1024;
  const sockets = new Set<Socket>();
  const pipes = new Set<Pipe>();
  let connections = 0;
  let blackholed = false;
  const upLink: Link = { freeAt: 0 };
  const downLink: Link = { freeAt: 0 };
  const server: Server = createServer({ noDelay: true, pauseOnConnect: true, allowHalfOpen: true }, (client) => {
    connections++;
    if (blackholed) {
      sockets.add(client);
      client.on('error', () => client.destroy());
      return;
    }
    const upstream = connect({ host: target.host, port: target.port, noDelay: true, allowHalfOpen: true });
    sockets.add(client);
    sockets.add(upstream);
    const up = new Pipe(client, upstream, options.delayMs, options.bytesPerSecond, queueBytes, upLink);
    const down = new Pipe(upstream, client, options.delayMs, options.bytesPerSecond, queueBytes, downLink);
    pipes.add(up);
    pipes.add(down);
    // A FIN travels through the pipe behind the data (each Pipe ends its output once drained);
    // only an error, a reset, tears both sides down at once.
    const kill = (): void => {
      client.destroy();
      upstream.destroy();
    };
    const forget = (): void => {
      if (!client.destroyed || !upstream.destroyed) return;
      sockets.delete(client);
      sockets.delete(upstream);
      for (const p of [up, down]) {
        p.stop();
        pipes.delete(p);
      }
    };
    client.on('error', kill);
    upstream.on('error', kill);
    client.on('close', forget);
    upstream.on('close', forget);
    upstream.once('connect', () => client.resume());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listen.host, port: listen.port }, resolve);
  });
  const a = server.address() as { address: string; port: number };
  const cut = (): void => {
    server.close();
    for (const s of sockets) s.destroy();
    sockets.clear();
    for (const p of pipes) p.stop();
    pipes.clear();
  };
  return {
    address: formatNetwork(a.address, a.port),
    get connections() {
      return connections;
    },
    cut,
    blackhole: () => {
      blackholed = true;
      for (const p of pipes) {
        p.blackholed = true;
        p.stop();
      }
    },
    close: async () => cut(),
  };
}

/**
 * A `route` for a migration's data connections (migrateLocally's option): the first network it is
 * asked for gets a WAN emulator in front of it, with `options`; close() stops it, if it started.
 */
export function wanRoute(options: Omit<WanOptions, 'target'>): { route: (network: string) => Promise<string>; close: () => Promise<void> } {
  let wan: WanEmulator | null = null;
  return {
    route: async (network) => {
      wan ??= await startWanEmulator({ ...options, target: network });
      return wan.address;
    },
    close: async () => {
      await wan?.close();
    },
  };
}
