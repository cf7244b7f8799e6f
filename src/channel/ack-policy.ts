/**
 * When the receiving side acknowledges what it delivered. An ACK frees the peer's send window and
 * its retransmission buffer; ACK with END_SEEN tells it our receiving half is over. Keepalives are
 * ACKs too (the core sends them on idle connections), so a live peer is never silent.
 */
import type { FerryError } from '../errors.js';
import type { Connection } from './connection.js';

/**
 * An ACK goes at once after an eighth of the window was delivered, else this long after the first
 * delivery it covers. An encrypted ACK costs a seal on one side and an open on the other, each a
 * trip through the thread pool: at 1 ms that was ~1000 a second at full speed, ~8 % of each side's
 * CPU. 5 ms delays nothing while the window (64 MiB = 50 ms at 10 Gb/s) is far from full.
 */
const ACK_DELAY_MS = 5;

/** What acknowledging takes from the rest of the channel. */
export interface AckHost {
  readonly error: FerryError | null;
  /** ACKs take the connection with the least queued, so they do not wait behind bulk data. */
  pickConnection(): Connection | null;
  /** Seals an ACK and queues it on `conn`; resolves once it is on its way. */
  sendAck(conn: Connection, endSeen: boolean, upTo: number): Promise<void>;
  /** What there is to acknowledge: messages delivered, and whether the peer's END arrived. */
  position(): { delivered: number; endSeen: boolean };
  /** An ACK is on its way: the channel may be done. */
  checkDone(): void;
}

export class AckPolicy {
  private deliveredSinceAck = 0;
  private timer: NodeJS.Timeout | null = null;
  private ackedUpTo = 0;
  private ackedEnd = false;

  constructor(
    private readonly host: AckHost,
    private readonly windowBytes: number,
  ) {}

  /** `bytes` of one message were delivered to the consumer. */
  delivered(bytes: number): void {
    this.deliveredSinceAck += bytes;
    if (this.deliveredSinceAck >= this.windowBytes / 8) {
      this.now();
      return;
    }
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.now();
    }, ACK_DELAY_MS);
  }

  /** Acknowledges at once (the peer's END, a keepalive on `conn`). */
  now(conn = this.host.pickConnection()): void {
    if (!conn || this.host.error) return;
    this.stop();
    this.deliveredSinceAck = 0;
    const { delivered, endSeen } = this.host.position();
    void this.host.sendAck(conn, endSeen, delivered).then(() => {
      // Counts only once the ACK is on its way: closing before that would strand the peer.
      if (conn.state !== 'open') return;
      this.ackedUpTo = Math.max(this.ackedUpTo, delivered);
      this.ackedEnd ||= endSeen;
      this.host.checkDone();
    });
  }

  /** The peer was told of all `total` messages and of its END. */
  covers(total: number): boolean {
    return this.ackedUpTo === total && this.ackedEnd;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
