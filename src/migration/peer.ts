/**
 * The source's view of what the destination says back: BEGIN_OK, then at most one decision —
 * COMMITTED or ABORT. A receive loop runs for the whole migration, so an ABORT or a dead channel
 * stops pre-copy at the next message instead of at the end.
 */
import type { Channel } from '../channel/types.js';
import { FerryError, toFerryError } from '../errors.js';
import { Deferred, withTimeout } from '../common/async.js';
import { farewell } from './farewell.js';
import { ENGINE_VERSION, MSG, decodeJson, intField, type Abort, type Committed } from './messages.js';

export type Decision = { type: 'committed'; digest: string | null } | { type: 'abort'; abort: Abort };

export class PeerReplies {
  peerAbort: Abort | null = null;
  private failure: FerryError | null = null;
  private readonly begun = new Deferred<void>();
  private readonly decided = new Deferred<Decision>();
  private ackedPass = 0;
  private ackWaiter: { pass: number; deferred: Deferred<void> } | null = null;

  constructor(private readonly channel: Channel) {
    void this.pump();
  }

  private fail(err: FerryError): void {
    if (!this.failure) this.failure = err;
    this.begun.reject(err);
    this.decided.reject(err);
    this.ackWaiter?.deferred.reject(err);
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const msg = await this.channel.receive();
        if (msg === null) {
          if (!this.decided.settled) this.fail(new FerryError('ERR_FERRY_NETWORK', 'the destination ended the channel without a decision'));
          return;
        }
        if (this.peerAbort) continue;
        switch (msg.type) {
          case MSG.BEGIN_OK: {
            const ok = decodeJson<{ version: number }>(msg.type, msg.payload);
            if (intField(ok, 'version', msg.type) !== ENGINE_VERSION) {
              throw new FerryError('ERR_FERRY_REFUSED', `destination speaks engine version ${ok.version}, this side ${ENGINE_VERSION}`);
            }
            this.begun.resolve();
            break;
          }
          case MSG.PASS_ACK: {
            const pass = intField(decodeJson<object>(msg.type, msg.payload), 'pass', msg.type);
            if (pass !== this.ackedPass + 1)
              throw new FerryError('ERR_FERRY_FRAME', `destination acknowledged pass ${pass} after ${this.ackedPass}`);
            this.ackedPass = pass;
            if (this.ackWaiter && this.ackWaiter.pass <= pass) this.ackWaiter.deferred.resolve();
            break;
          }
          case MSG.COMMITTED: {
            const c = decodeJson<Committed>(msg.type, msg.payload);
            this.decided.resolve({ type: 'committed', digest: typeof c.digest === 'string' ? c.digest : null });
            break;
          }
          case MSG.ABORT: {
            const a = decodeJson<Abort>(msg.type, msg.payload);
            this.peerAbort = { code: String(a.code), message: String(a.message) };
            const err = new FerryError('ERR_FERRY_ABORTED', `the destination aborted: ${this.peerAbort.code}: ${this.peerAbort.message}`);
            this.begun.reject(err);
            this.ackWaiter?.deferred.reject(err);
            this.decided.resolve({ type: 'abort', abort: this.peerAbort });
            if (!this.failure) this.failure = err;
            // Keep reading: the destination's END after its ABORT must be taken for its end() to finish.
            break;
          }
          default:
            throw new FerryError('ERR_FERRY_FRAME', `unexpected migration message ${msg.type} from the destination`);
        }
      }
    } catch (err) {
      const e = toFerryError(err, 'ERR_FERRY_NETWORK');
      this.fail(e);
      if (!this.channel.error) this.channel.abort(e);
    }
  }

  /** Throws the peer's ABORT or the channel's failure, if there has been one. */
  throwIfPeerAborted(): void {
    if (this.failure) throw this.failure;
  }

  beginOk(): Promise<void> {
    return withTimeout(
      this.begun.promise,
      30_000,
      () => new FerryError('ERR_FERRY_TIMEOUT', 'the destination did not answer BEGIN within 30 s'),
    );
  }

  /** Resolves once the destination acknowledged `pass`; rejects after `timeoutMs` or on failure. */
  async passAcked(pass: number, timeoutMs: number, onTimeout: () => Error): Promise<void> {
    this.throwIfPeerAborted();
    if (this.ackedPass >= pass) return;
    const deferred = new Deferred<void>();
    this.ackWaiter = { pass, deferred };
    try {
      await withTimeout(deferred.promise, Math.max(1, timeoutMs), onTimeout);
    } finally {
      this.ackWaiter = null;
    }
  }

  decision(timeoutMs: number): Promise<Decision> {
    return withTimeout(
      this.decided.promise,
      timeoutMs,
      () => new FerryError('ERR_FERRY_TIMEOUT', `no decision from the destination within ${timeoutMs} ms`),
    );
  }

  /**
   * Gives up: tells the destination (not when it was the destination that said no), then ends
   * the channel in the background.
   */
  async abort(reason: Abort): Promise<void> {
    await farewell(this.channel, this.peerAbort ? undefined : { type: MSG.ABORT, body: reason });
  }

  /** After COMMITTED: ends this side of the channel in the background; failures no longer matter. */
  close(): void {
    void farewell(this.channel);
  }
}
