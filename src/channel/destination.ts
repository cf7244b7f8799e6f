/**
 * The destination side of a channel. It never dials: connections come to it, either from its own
 * listeners (`listenChannel`, in-process use and tests) or from the agent's router, which hands
 * each socket over with the bytes it already read (`adopt`). A connection touches the channel only
 * once its HELLO opened under the migration's key with a connection id never seen before.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { FerryError } from '../errors.js';
import type { KeySchedule } from '../crypto/key-schedule.js';
import type { Channel, ChannelSpec } from './types.js';
import { ChannelCore } from './core.js';
import { prepareKey, type ChannelOptions } from './options.js';
import type { Connection } from './connection.js';
import type { RawFrame } from './decoder.js';
import { formatNetwork, parseNetwork } from './network.js';
import { DIRECTION_BIT } from './wire.js';

export interface IncomingChannel extends Channel {
  /**
   * Takes over a connection the source made: `head` is what was already read from it (by the
   * router). The connection is dropped, and the channel left untouched, unless its HELLO opens.
   */
  adopt(socket: Socket, head?: Uint8Array): void;
}

class DestinationChannel extends ChannelCore implements IncomingChannel {
  private readonly usedIds = new Set<number>();
  private openCount = 0;
  private lonelyTimer: NodeJS.Timeout | null = null;
  private readonly onRejectedConnection?: (error: FerryError) => void;

  constructor(spec: ChannelSpec, key: KeySchedule | null, options: ChannelOptions) {
    super(spec, key, options, 1);
    this.onRejectedConnection = options.onRejectedConnection;
    this.startLonelyTimer();
  }

  adopt(socket: Socket, head?: Uint8Array): void {
    if (!this.hasWork) {
      socket.destroy();
      return;
    }
    const conn = this.newConnection(socket, true, formatNetwork(socket.localAddress ?? '?', socket.localPort ?? 0));
    this.attach(conn, head);
  }

  protected override onHandshakeFrame(conn: Connection, frame: RawFrame): void {
    const h = frame.header;
    if ((h.connectionId & DIRECTION_BIT) !== 0) {
      this.reject(conn, new FerryError('ERR_FERRY_FRAME', 'HELLO carries the destination direction bit'));
      return;
    }
    if (this.usedIds.has(h.connectionId)) {
      this.reject(conn, new FerryError('ERR_FERRY_SEQUENCE', `connection id ${h.connectionId} was used before: a replayed connection`));
      return;
    }
    void this.checkHello(frame)
      .then(async (result) => {
        if (!this.hasWork || conn.state !== 'handshake') return;
        if (typeof result !== 'number') {
          this.reject(conn, result);
          return;
        }
        if (this.usedIds.has(h.connectionId)) {
          this.reject(conn, new FerryError('ERR_FERRY_SEQUENCE', `connection id ${h.connectionId} was used before: a replayed connection`));
          return;
        }
        this.usedIds.add(h.connectionId);
        conn.id = h.connectionId;
        const hello = await this.sealHello(conn);
        conn.put(0, hello, 0);
        this.openCount++;
        this.stopLonelyTimer();
        this.opened(conn, h, result);
      })
      .catch((err) => this.fail(err instanceof FerryError ? err : new FerryError('ERR_FERRY_INTERNAL', String(err))));
  }

  protected override onRejected(err: FerryError): void {
    this.onRejectedConnection?.(err);
  }

  protected override connectionLost(_conn: Connection, wasOpen: boolean): void {
    if (!wasOpen) return;
    this.openCount--;
    if (this.openCount === 0) this.startLonelyTimer();
  }

  protected override handshakeTimedOut(conn: Connection): void {
    this.reject(conn, new FerryError('ERR_FERRY_TIMEOUT', `no HELLO within ${this.options.handshakeTimeoutMs} ms`));
  }

  /** Without any connection for reconnectTimeoutMs, the source is gone: fail. */
  private startLonelyTimer(): void {
    if (this.lonelyTimer || !this.hasWork) return;
    this.lonelyTimer = setTimeout(() => {
      this.lonelyTimer = null;
      this.fail(new FerryError('ERR_FERRY_NETWORK', `no connection from the source for ${this.options.reconnectTimeoutMs} ms`));
    }, this.options.reconnectTimeoutMs);
  }

  private stopLonelyTimer(): void {
    if (this.lonelyTimer) clearTimeout(this.lonelyTimer);
    this.lonelyTimer = null;
  }

  protected override onFailed(): void {
    this.stopLonelyTimer();
  }

  protected override onFinished(): void {
    this.stopLonelyTimer();
  }
}

/** A destination channel that connections are handed to with `adopt` (from the agent's router). */
export async function createIncomingChannel(spec: ChannelSpec, options: ChannelOptions = {}): Promise<IncomingChannel> {
  const key = await prepareKey(spec, options);
  return new DestinationChannel(spec, key, options);
}

export interface ChannelListener {
  readonly channel: IncomingChannel;
  /** The bound addresses, 'host:port', in the order of spec.networks (port 0 resolved). */
  readonly networks: string[];
  /** Stops listening (the channel's connections stay). */
  close(): Promise<void>;
}

/** Binds every address of spec.networks and feeds what connects to one incoming channel. */
export async function listenChannel(spec: ChannelSpec, options: ChannelOptions = {}): Promise<ChannelListener> {
  const networks = (spec.networks ?? []).map((n) => parseNetwork(n, { listen: true }));
  if (networks.length === 0) throw new FerryError('ERR_FERRY_INPUT', 'channel spec: networks must name at least one host:port');
  const channel = await createIncomingChannel(spec, options);
  const servers = await listenAll(networks, (socket) => channel.adopt(socket));
  return {
    channel,
    networks: servers.map((s) => boundAddress(s)),
    close: () => closeAll(servers),
  };
}

export async function listenAll(networks: { host: string; port: number }[], onSocket: (socket: Socket) => void): Promise<Server[]> {
  const servers: Server[] = [];
  try {
    for (const net of networks) {
      const server = createServer({ noDelay: true }, onSocket);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: net.host, port: net.port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      servers.push(server);
    }
  } catch (err) {
    await closeAll(servers);
    throw new FerryError('ERR_FERRY_NETWORK', `cannot listen on a migration network: ${(err as Error).message}`, { cause: err });
  }
  return servers;
}

export function boundAddress(server: Server): string {
  const a = server.address();
  if (!a || typeof a === 'string') return String(a);
  return formatNetwork(a.address, a.port);
}

/** Stops accepting at once; connections already made are not waited for (they belong to channels). */
export async function closeAll(servers: Server[]): Promise<void> {
  for (const s of servers) s.close();
}
