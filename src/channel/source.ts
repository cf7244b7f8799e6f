/**
 * The source side of a channel: it dials the destination's migration networks in preference order,
 * keeps `streams` connections open, and when connections fail it dials again — on the same network
 * first, on the next when that fails — so a transfer carries on over another network.
 */
import { connect } from 'node:net';
import { FerryError } from '../errors.js';
import type { KeySchedule } from '../crypto/key-schedule.js';
import type { Channel, ChannelSpec } from './types.js';
import { ChannelCore } from './core.js';
import { prepareKey, type ChannelOptions } from './options.js';
import type { Connection } from './connection.js';
import type { RawFrame } from './decoder.js';
import { parseNetwork, type NetworkAddress } from './network.js';
import { MAX_CONNECTION_ID } from './wire.js';

class SourceChannel extends ChannelCore {
  private readonly networks: NetworkAddress[];
  private readonly streams: number;
  private nextConnectionId = 1;
  private networkIndex = 0;
  /** Network of the last connection that opened; -1 before the first. */
  private workingNetwork = -1;
  private dialing = 0;
  private failuresInRow = 0;
  /** When the last open connection was lost (null while one is open, or before the first opened). */
  private lostAllAt: number | null = null;
  private readonly failures: string[] = [];
  private readonly networkOf = new WeakMap<Connection, number>();
  private redialTimer: NodeJS.Timeout | null = null;
  private readonly onFailover: ChannelOptions['onFailover'];
  private firstOpen: { resolve: () => void; reject: (e: FerryError) => void } | null = null;
  readonly ready: Promise<void>;

  constructor(spec: ChannelSpec, key: KeySchedule | null, options: ChannelOptions, networks: NetworkAddress[]) {
    super(spec, key, options, 0);
    this.networks = networks;
    this.streams = spec.streams;
    this.onFailover = options.onFailover;
    this.ready = new Promise((resolve, reject) => (this.firstOpen = { resolve, reject }));
    this.ready.catch(() => {});
  }

  start(): void {
    this.replenish();
  }

  private replenish(): void {
    while (this.hasWork && this.liveConnections + this.dialing < this.streams) this.dial();
  }

  private dial(): void {
    if (this.nextConnectionId > MAX_CONNECTION_ID) {
      this.fail(new FerryError('ERR_FERRY_LIMIT', 'connection ids of this migration are used up'));
      return;
    }
    const index = this.networkIndex;
    const net = this.networks[index]!;
    this.dialing++;
    let settled = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      this.dialing--;
      return true;
    };
    const socket = connect({ host: net.host, port: net.port });
    const timer = setTimeout(
      () => socket.destroy(new Error(`no answer within ${this.options.connectTimeoutMs} ms`)),
      this.options.connectTimeoutMs,
    );
    socket.once('error', (err) => {
      if (settle()) this.dialFailed(index, `${net.label}: ${err.message}`);
    });
    socket.once('connect', () => {
      if (!settle()) return;
      if (!this.hasWork) {
        socket.destroy();
        return;
      }
      const conn = this.newConnection(socket, false, net.label);
      conn.id = this.nextConnectionId++;
      this.networkOf.set(conn, index);
      this.attach(conn);
      this.sealHello(conn).then(
        (hello) => conn.put(0, hello, 0),
        (err) => this.fail(err instanceof FerryError ? err : new FerryError('ERR_FERRY_INTERNAL', String(err))),
      );
    });
  }

  private dialFailed(index: number, why: string): void {
    if (!this.hasWork) return;
    this.failures.push(why);
    if (this.failures.length > 8) this.failures.shift();
    if (index === this.networkIndex) {
      this.networkIndex = (index + 1) % this.networks.length;
      this.failuresInRow++;
    }
    if (this.failuresInRow >= this.networks.length * this.options.connectRounds && !this.ridingOut()) {
      const err = new FerryError('ERR_FERRY_NETWORK', `no migration network answered (${this.failures.join('; ')})`);
      this.fail(err);
      return;
    }
    if (!this.redialTimer) {
      this.redialTimer = setTimeout(
        () => {
          this.redialTimer = null;
          this.replenish();
        },
        Math.min(1000, 25 * this.failuresInRow),
      );
    }
  }

  /**
   * Once the channel has worked, a lost network is waited out: redialing goes on while another
   * connection is still open, and for reconnectTimeoutMs after the last one was lost (a network
   * blip or a failover that takes a while must not end a long migration). Before the first
   * connection opened, connectRounds decide alone: a wrong address should fail fast.
   */
  private ridingOut(): boolean {
    if (this.workingNetwork === -1) return false;
    if (this.liveConnections > 0) return true;
    this.lostAllAt ??= performance.now();
    return performance.now() - this.lostAllAt < (this.rideOutMs ?? this.options.reconnectTimeoutMs);
  }

  private rideOutMs: number | null = null;

  /**
   * From now on, wait out the loss of every connection for at most `ms` (not longer than
   * reconnectTimeoutMs): the migration engine's switch-over, with the guest paused, would rather
   * give up and resume it than stay paused through a long outage.
   */
  limitReconnectWait(ms: number): void {
    this.rideOutMs = Math.min(ms, this.options.reconnectTimeoutMs);
  }

  protected override onHandshakeFrame(conn: Connection, frame: RawFrame): void {
    const h = frame.header;
    if (h.connectionId !== conn.recvId) {
      this.fail(new FerryError('ERR_FERRY_SEQUENCE', `the destination answered on connection ${h.connectionId >>> 0}, not ${conn.recvId}`));
      return;
    }
    void this.checkHello(frame).then((result) => {
      if (!this.hasWork || conn.state !== 'handshake') return;
      // The destination proved it holds the key; anything wrong now is an attack or a bug: fail closed.
      if (typeof result !== 'number') {
        this.fail(result);
        return;
      }
      const index = this.networkOf.get(conn)!;
      if (this.workingNetwork !== -1 && index !== this.workingNetwork) {
        this.stats.failovers++;
        const from = this.networks[this.workingNetwork]!.label;
        this.onFailover?.({ from, to: this.networks[index]!.label, bytesResent: this.resendBytes });
      }
      this.workingNetwork = index;
      this.failuresInRow = 0;
      this.lostAllAt = null;
      this.opened(conn, h, result);
      this.firstOpen?.resolve();
    });
  }

  protected override connectionLost(conn: Connection, wasOpen: boolean, why: string): void {
    if (wasOpen) {
      if (this.liveConnections === 0) this.lostAllAt ??= performance.now();
      this.replenish();
    } else
      this.dialFailed(
        this.networkOf.get(conn) ?? this.networkIndex,
        `${conn.network}: ${why} during the HELLO exchange (wrong key or migration, or the network)`,
      );
  }

  protected override handshakeTimedOut(conn: Connection): void {
    this.lose(conn, `no HELLO within ${this.options.handshakeTimeoutMs} ms`);
  }

  protected override onFailed(err: FerryError): void {
    if (this.redialTimer) clearTimeout(this.redialTimer);
    this.redialTimer = null;
    this.firstOpen?.reject(err);
  }
}

/**
 * Opens the source side of a channel: dials spec.networks and resolves once the first connection
 * has passed its HELLO exchange (the rest follow). Rejects with ERR_FERRY_NETWORK when no network
 * answers, ERR_FERRY_AUTH when the destination's HELLO does not open, and at once with the reason
 * of `options.signal` when that is aborted first.
 */
export async function connectChannel(spec: ChannelSpec, options: ChannelOptions = {}): Promise<Channel> {
  const networks = (spec.networks ?? []).map((n) => parseNetwork(n));
  if (networks.length === 0) throw new FerryError('ERR_FERRY_INPUT', 'channel spec: networks must name at least one host:port');
  const key = await prepareKey(spec, options);
  const channel = new SourceChannel(spec, key, options, networks);
  const { signal } = options;
  const onCancel = (): void => {
    const reason: unknown = signal?.reason;
    channel.abort(reason instanceof FerryError ? reason : new FerryError('ERR_FERRY_ABORTED', 'cancelled while connecting'));
  };
  signal?.addEventListener('abort', onCancel, { once: true });
  try {
    if (signal?.aborted) onCancel();
    else channel.start();
    await channel.ready;
  } finally {
    signal?.removeEventListener('abort', onCancel);
  }
  return channel;
}
