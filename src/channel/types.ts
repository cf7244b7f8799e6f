/**
 * The contract of the encrypted channel (src/channel), as the migration engine uses it. The wire
 * format and its safety argument are in docs/protocol.md.
 *
 * A channel is one migration's data path between two host processes: ordered, reliable,
 * bidirectional messages carried over `streams` TCP connections, every frame sealed with
 * AES-256-GCM under the migration's key (or plain, when the coordinator decided so). The side that
 * connects is the migration source; the side that accepts is the destination.
 */
import type { FerryError } from '../errors.js';

/** What the coordinator resolved the guest's disabled/opportunistic/required setting to. */
export type ChannelMode = 'encrypted' | 'plain';

export interface ChannelSpec {
  /** The migration id: 1 to 64 characters of [A-Za-z0-9._-]; named in every connection's HELLO. */
  migrationId: string;
  /** 32 bytes, fresh for this migration. The channel copies it; the caller wipes its own copy. */
  key: Uint8Array;
  /** 8 bytes, XORed into every IV (docs/protocol.md). */
  nonce: Uint8Array;
  mode: ChannelMode;
  /** TCP connections to use at once, 1 to 16. */
  streams: number;
  /** Cap on payload bytes a second sent, summed over the streams; undefined: no cap. */
  maxBytesPerSecond?: number;
  /**
   * Threads each seal or open of this channel may spread over (1 to MAX_THREADS); undefined: every
   * core. The host agent's share of its crypto-thread budget (docs/operations.md, "Limits").
   */
  cryptoThreads?: number;
  /**
   * The destination's migration addresses, 'host:port' ('[v6]:port'), in preference order. The
   * source connects to the first that answers and fails over to the next; `listenChannel` binds
   * them (port 0: any). Not needed by a destination that adopts sockets from the agent's router.
   */
  networks?: readonly string[];
}

/** One application message. `type` is the engine's own (0-255); the channel does not interpret it. */
export interface ChannelMessage {
  type: number;
  payload: Uint8Array;
  /**
   * Set when the message was opened in place (ChannelOptions.placePayload): its plaintext is in
   * the segments the consumer chose, authenticated, and `payload` is the Placement's `payload`.
   */
  placed?: true;
}

/**
 * Where an incoming message's plaintext is opened to (ChannelOptions.placePayload): `segments`,
 * in order, their lengths adding up to the message's length; receive() then delivers `payload`
 * (something of the consumer's, typically the segments that hold its header) with `placed` set.
 */
export interface Placement {
  segments: Uint8Array[];
  payload: Uint8Array;
}

/**
 * Decides, before an encrypted DATA message is opened, where its plaintext goes; null: into one
 * buffer of its own (allocatePayload), as usual. `peek(offset, length)` gives plaintext bytes of the
 * message that are NOT YET AUTHENTICATED: a forger controls them. They may only choose among
 * places the consumer would accept any bytes in until the message is delivered, because a message
 * that fails its tag check fails the channel, but only after its plaintext was written there
 * (docs/protocol.md, "Opening in place"). A throw counts as null.
 */
export type PlacePayload = (
  messageType: number,
  length: number,
  peek: (offset: number, length: number) => Promise<Uint8Array>,
) => Promise<Placement | null> | Placement | null;

export interface ChannelStats {
  /** Application payload bytes sent / received. */
  bytesSent: number;
  bytesReceived: number;
  /** Bytes written to / read from the sockets, headers and tags included. */
  wireBytesSent: number;
  wireBytesReceived: number;
  messagesSent: number;
  messagesReceived: number;
  /** Connections opened over the channel's life, reconnects included. */
  connectionsOpened: number;
  /** Payload bytes the peer acknowledged: what has arrived, unlike bytesSent (taken into the send window). */
  bytesAcknowledged: number;
  /** Times the channel moved to another migration network. */
  failovers: number;
  /** The network ('host:port') in use now. */
  network: string | null;
  /** Incoming connections refused before they touched the channel (wrong key, mode, migration; replayed id). */
  connectionsRejected: number;
  /** Messages sent again on another connection after theirs was lost, and their payload bytes. */
  retransmittedMessages: number;
  retransmittedBytes: number;
  /** Retransmitted messages that had already arrived, dropped (exactly once). */
  duplicatesDropped: number;
  /** The most threads one seal or open of this channel ran on, as the crypto backend reported it (0: none ran). */
  cryptoThreadsPeak: number;
  /** The key epoch this side seals under now (0 until its first key update). */
  keyEpochSent: number;
  /** The highest key epoch of a frame received from the peer. */
  keyEpochReceived: number;
}

/** The source's channel moved to another of the destination's migration networks. */
export interface ChannelFailover {
  /** 'host:port' of the network given up, and of the one now carrying the data. */
  from: string;
  to: string;
  /** Payload bytes the lost connections had carried unacknowledged then, queued to go again over `to` (less what is acknowledged meanwhile). */
  bytesResent: number;
}

export interface Channel {
  readonly migrationId: string;
  readonly mode: ChannelMode;
  /** The spec's cryptoThreads: null when every core may be used. */
  readonly cryptoThreads: number | null;
  /**
   * Queues one message. Resolves when the channel has taken it: the caller may then reuse the
   * payload's memory. Waits while the send window is full (backpressure). Messages are delivered
   * to the peer in the order sent, exactly once, also across a failover to another network.
   * Rejects with the channel's sticky error once it has failed.
   *
   * The payload may be given as segments (a header and pages of guest memory, say): the peer
   * receives them as one message, and they are sealed where they lie, never copied together.
   */
  send(type: number, payload: Uint8Array | readonly Uint8Array[]): Promise<void>;
  /** The next message, in order; null after the peer's authenticated END. Rejects with the sticky error. */
  receive(): Promise<ChannelMessage | null>;
  /**
   * Sends END after everything queued and resolves once the peer has all of it. The connections
   * close once both sides have ended and each has every message of the other.
   */
  end(): Promise<void>;
  /** Fails the channel now with `reason` (sticky); pending and later calls reject with it. */
  abort(reason: FerryError): void;
  /**
   * Releases connections and timers. After both sides' end() this is a no-op; before, it is
   * abort(ERR_FERRY_ABORTED 'channel closed').
   */
  close(): void;
  /**
   * Source only (a no-op elsewhere): from now on, wait out the loss of every connection for at
   * most `ms` before failing with ERR_FERRY_NETWORK (by default reconnectTimeoutMs, 30 s).
   */
  limitReconnectWait?(ms: number): void;
  /** The sticky error, once the channel has failed. */
  readonly error: FerryError | null;
  readonly stats: ChannelStats;
}
