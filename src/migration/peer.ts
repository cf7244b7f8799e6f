/**
 * The source's view of what the destination says back: BEGIN_OK, then at most one decision —
 * COMMITTED or ABORT. A receive loop runs for the whole migration, so an ABORT or a dead channel
 * stops pre-copy at the next message instead of at the end.
 */
import type { Channel } from '../channel/types.js';
import { FerryError, toFerryError } from '../errors.js';
import { Deferred, withTimeout } from './deferred.js';
import { ENGINE_VERSION, MSG, decodeJson, encodeJson, intField, type Abort, type Committed } from './messages.js';

export type Decision = { type: 'committed'; digest: string | null } | { type: 'abort'; abort: Abort };

/** Best-effort sends at the end must not hang a migration that is already over. */
const FAREWELL_MS = 5000;

export class PeerReplies {
  peerAbort: Abort | null = null;
  private failure: FerryError | null = null;
  private readonly begun = new Deferred<void>();
  private readonly decided = new Deferred<Decision>();

  constructor(private readonly channel: Channel) {
    void this.pump();
  }

  private fail(err: FerryError): void {
    if (!this.failure) this.failure = err;
    this.begun.reject(err);
    this.decided.reject(err);
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const msg = await this.channel.receive();
        if (msg === null) {
          if (!this.decided.settled) this.fail(new FerryError('ERR_FERRY_NETWORK', 'the destination ended the channel without a decision'));
          return;
        }
        switch (msg.type) {
          case MSG.BEGIN_OK: {
            const ok = decodeJson<{ version: number }>(msg.type, msg.payload);
            if (intField(ok, 'version', msg.type) !== ENGINE_VERSION) {
              throw new FerryError('ERR_FERRY_REFUSED', `destination speaks engine version ${ok.version}, this side ${ENGINE_VERSION}`);
            }
            this.begun.resolve();
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
            this.decided.resolve({ type: 'abort', abort: this.peerAbort });
            if (!this.failure) this.failure = err;
            return;
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
    return withTimeout(this.begun.promise, 30_000, () => new FerryError('ERR_FERRY_TIMEOUT', 'the destination did not answer BEGIN within 30 s'));
  }

  decision(timeoutMs: number): Promise<Decision> {
    return withTimeout(this.decided.promise, timeoutMs, () => new FerryError('ERR_FERRY_TIMEOUT', `no decision from the destination within ${timeoutMs} ms`));
  }

  /** Tells the destination this side gives up (best effort), then closes the channel. */
  async abort(reason: Abort): Promise<void> {
    try {
      if (!this.channel.error) {
        await withTimeout(this.channel.send(MSG.ABORT, encodeJson(reason)), FAREWELL_MS, () => new Error('timeout'));
        await withTimeout(this.channel.end(), FAREWELL_MS, () => new Error('timeout'));
      }
    } catch {
      // The channel is gone; the destination cannot commit without COMPLETE anyway.
    }
    if (!this.channel.error) this.channel.abort(new FerryError('ERR_FERRY_ABORTED', `migration aborted: ${reason.message}`));
  }

  /** After COMMITTED: ends this side of the channel; failures no longer matter. */
  async close(): Promise<void> {
    try {
      await withTimeout(this.channel.end(), FAREWELL_MS, () => new Error('timeout'));
    } catch {
      // Committed already; a lost END changes nothing.
    }
  }
}
