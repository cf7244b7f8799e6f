/**
 * What the source writes to the channel, and its counts: runs of pages and blocks as DATA
 * messages (zero ones as markers, found by the zero scan), several handed to the channel at once so
 * it can seal them in batches, and the control messages between them. The counts are the ones
 * COMPLETE carries and the destination checks. When to send what: source.ts.
 */
import type { Channel } from '../channel/types.js';
import { zeroPages } from '../crypto/index.js';
import { DataBuilder, MSG, SPACE_DISK, SPACE_MEMORY, type SpaceCounts } from './messages.js';
import type { PeerReplies } from './peer.js';
import type { PassReport, SourceGuest } from './types.js';

/** Pages or blocks scanned and sent per step: 1 MiB, one DATA message's worth. */
const CHUNK_BYTES = 1 << 20;
/** DATA messages queued on the channel at once. */
const MAX_INFLIGHT = 8;

/** Ascending indexes (a harvested dirty log) as runs of [first, count]. */
export function runsOf(indexes: Uint32Array): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  let i = 0;
  while (i < indexes.length) {
    const first = indexes[i]!;
    let n = 1;
    while (i + n < indexes.length && indexes[i + n] === first + n) n++;
    runs.push([first, n]);
    i += n;
  }
  return runs;
}

function emptyPass(pass: number): PassReport {
  return { pass, pages: 0, zeroPages: 0, blocks: 0, zeroBlocks: 0, bytes: 0, durationMs: 0 };
}

export class DataSender {
  private builder = new DataBuilder();
  /** DATA messages handed to the channel and not yet taken, with the builders they live in. */
  private readonly inflight: Array<{ taken: Promise<void>; builder: DataBuilder }> = [];
  private readonly spare: DataBuilder[] = [];
  private readonly scratch = Buffer.allocUnsafe(CHUNK_BYTES);
  readonly memory: SpaceCounts = { dataUnits: 0, zeroUnits: 0, dataBytes: 0 };
  readonly disk: SpaceCounts = { dataUnits: 0, zeroUnits: 0, dataBytes: 0 };
  /** Payload bytes of every message sent. */
  bytesSent = 0;
  dataMessages = 0;
  /** The pass being sent (0 before the first), and what it has sent so far. */
  current: PassReport = emptyPass(0);

  /**
   * `afterChunk` runs after each 1 MiB scanned, with the units just handed over, their bytes as
   * scanned (disk blocks: in scratch memory the next read reuses) and the indexes of the zero ones:
   * where the engine checks its cancel and deadline, and verify tags them.
   */
  constructor(
    private readonly channel: Channel,
    private readonly guest: SourceGuest,
    private readonly replies: PeerReplies,
    private readonly afterChunk: (space: number, first: number, count: number, bytes: Uint8Array, zeros: Uint32Array) => void,
  ) {}

  /** The next pass's report, counted from here on. */
  beginPass(): PassReport {
    this.current = emptyPass(this.current.pass + 1);
    return this.current;
  }

  /** A control message, once the channel has taken it. */
  async send(type: number, payload: Uint8Array): Promise<void> {
    this.replies.throwIfPeerAborted();
    await this.channel.send(type, payload);
    this.bytesSent += payload.length;
    this.current.bytes += payload.length;
  }

  /** Sends a run of pages, cut into chunks, zero pages as markers. */
  async sendPages(first: number, count: number): Promise<void> {
    const g = this.guest;
    const chunk = CHUNK_BYTES / g.pageSize;
    for (let at = first; at < first + count;) {
      const n = g.pageRunLimit(at, Math.min(chunk, first + count - at));
      const view = g.memoryPages(at, n);
      const zeros = zeroPages(view, g.pageSize);
      let z = 0;
      for (let i = 0; i < n;) {
        const isZero = z < zeros.length && zeros[z] === i;
        let len = 1;
        if (isZero) {
          while (z + len < zeros.length && zeros[z + len] === i + len) len++;
          z += len;
          await this.room(0, SPACE_MEMORY);
          this.builder.addZero(at + i, len);
          this.memory.zeroUnits += len;
          this.current.zeroPages += len;
        } else {
          const nextZero = z < zeros.length ? zeros[z]! : n;
          len = nextZero - i;
          const bytes = view.subarray(i * g.pageSize, (i + len) * g.pageSize);
          await this.room(bytes.length, SPACE_MEMORY);
          this.builder.addPages(at + i, len, bytes);
          this.memory.dataUnits += len;
          this.memory.dataBytes += bytes.length;
          this.current.pages += len;
        }
        i += len;
      }
      this.afterChunk(SPACE_MEMORY, at, n, view, zeros);
      at += n;
    }
  }

  /** Sends a run of disk blocks, zero blocks as markers. */
  async sendBlocks(first: number, count: number): Promise<void> {
    const g = this.guest;
    const chunk = CHUNK_BYTES / g.blockSize;
    for (let at = first; at < first + count; at += chunk) {
      const n = Math.min(chunk, first + count - at);
      const data = g.readBlocks(at, n, this.scratch);
      const zeros = zeroPages(data, g.blockSize);
      let z = 0;
      for (let i = 0; i < n; i++) {
        if (z < zeros.length && zeros[z] === i) {
          z++;
          await this.room(0, SPACE_DISK);
          this.builder.addZero(at + i, 1);
          this.disk.zeroUnits++;
          this.current.zeroBlocks++;
        } else {
          const bytes = data.subarray(i * g.blockSize, (i + 1) * g.blockSize);
          await this.room(bytes.length, SPACE_DISK);
          this.builder.addData(at + i, 1, bytes);
          this.disk.dataUnits++;
          this.disk.dataBytes += bytes.length;
          this.current.blocks++;
        }
      }
      this.afterChunk(SPACE_DISK, at, n, data, zeros);
    }
  }

  /** Hands the last DATA message to the channel and waits until the channel has taken every one. */
  async endData(): Promise<void> {
    await this.flush();
    while (this.inflight.length > 0) await this.settleOne();
  }

  /**
   * Hands the message being built to the channel without waiting for it to be taken, so several
   * are queued at once and the channel can seal them in batches; at most MAX_INFLIGHT.
   */
  private async flush(): Promise<void> {
    if (this.builder.empty) return;
    this.replies.throwIfPeerAborted();
    this.dataMessages++;
    const length = this.builder.bytes;
    const payload = this.builder.take();
    const taken = this.channel.send(MSG.DATA, payload);
    taken.catch(() => {});
    this.inflight.push({ taken, builder: this.builder });
    this.bytesSent += length;
    this.current.bytes += length;
    this.builder = this.spare.pop() ?? new DataBuilder();
    while (this.inflight.length >= MAX_INFLIGHT) await this.settleOne();
  }

  private async settleOne(): Promise<void> {
    const first = this.inflight.shift()!;
    await first.taken;
    this.spare.push(first.builder);
  }

  /** Room for `bytes` more data (and one run) in the message being built, flushing first if not. */
  private async room(bytes: number, space: number): Promise<void> {
    if (!this.builder.empty && (this.builder.space !== space || !this.builder.fits(bytes))) await this.flush();
    this.builder.space = space;
    this.builder.pass = this.current.pass;
  }
}
