/**
 * The destination side of a migration: checks BEGIN against its own guest, writes pages and
 * blocks straight into guest memory and disk, checks the counts at COMPLETE, then hands the
 * decision to its agent (through `decide`) and answers COMMITTED or ABORT.
 */
import type { Channel, ChannelMessage } from '../channel/types.js';
import { FerryError, toFerryError } from '../errors.js';
import { farewell } from './farewell.js';
import {
  ENGINE_VERSION,
  MSG,
  RUN_DATA,
  SPACE_DISK,
  SPACE_MEMORY,
  decodeData,
  decodeJson,
  encodeJson,
  intField,
  type Begin,
  type Complete,
  type DataMessage,
  type SpaceCounts,
} from './messages.js';
import { Outcome } from './outcome.js';
import type { InPlaceOpener } from './in-place.js';
import { PageWriter, type CopyBatch, type PageCopy } from './page-writer.js';
import type { PayloadPool } from './payload-pool.js';
import type { DestinationGuest, MigrationEvent, MigrationResult, PassReport } from './types.js';
import {
  chunkDigestsOf,
  CHUNK_BYTES,
  NO_ZEROS,
  SourceChunkHashes,
  VERIFY_ALGORITHM,
  VERIFY_KEY_BYTES,
  type ChunkDigests,
} from './verify.js';

export interface DestinationOptions {
  migrationId: string;
  /**
   * Called once everything has arrived and checked out: the agent records ownership durably and
   * answers 'commit', or answers 'abort'. May take as long as it needs.
   */
  decide: (ready: { sourceDigest: string | null; digest: string | null }) => Promise<'commit' | 'abort'>;
  /** Throws (ERR_FERRY_FRAME) when the source's device state cannot be started from; checked before ready. */
  checkDevice: (deviceState: object) => void;
  /** Starts the guest running with the source's device state; COMMITTED is sent after it returns. */
  resume: (deviceState: object) => Promise<void> | void;
  /**
   * The pool the channel takes DATA payloads' memory from (its `allocatePayload` is
   * `receiveInto(pool)`): each payload goes back to it once its pages are in guest memory, and the
   * pool is cleared when the migration ends.
   */
  payloads?: PayloadPool;
  /**
   * Copies pages into guest memory off the event loop (the addon's copyBatch); without it they are
   * copied inline. See page-writer.ts for the ordering argument.
   */
  copyPages?: CopyBatch | null;
  /**
   * The opener whose `place` the channel was given (ChannelOptions.placePayload): DATA it delivers
   * placed has its pages in guest memory already, and only its layout is applied here.
   */
  inPlace?: InPlaceOpener | null;
}

const RECEIVED = 1;
const WRITTEN = 2;

class DestinationMigration {
  private readonly started = performance.now();
  private readonly cpuStart = process.cpuUsage();
  private readonly pageFlags: Uint8Array;
  private readonly blockFlags: Uint8Array;
  private readonly zeroBlock: Uint8Array;
  private readonly counts: Record<number, SpaceCounts> = {
    [SPACE_MEMORY]: { dataUnits: 0, zeroUnits: 0, dataBytes: 0 },
    [SPACE_DISK]: { dataUnits: 0, zeroUnits: 0, dataBytes: 0 },
  };
  private readonly passes: PassReport[] = [];
  private dataMessages = 0;
  private openedInPlace = 0;
  private bytesReceived = 0;
  private device: object | null = null;
  private sourceAborted = false;
  private readonly writer: PageWriter;
  /** When verifying: the tags of what this side holds, and the source's chunk tags (verify.ts). */
  private digests: ChunkDigests | null = null;
  private sourceHashes: SourceChunkHashes | null = null;

  constructor(
    private readonly channel: Channel,
    private readonly guest: DestinationGuest,
    private readonly options: DestinationOptions,
    private readonly onEvent: (event: MigrationEvent) => void,
  ) {
    this.pageFlags = new Uint8Array(guest.pageCount);
    this.blockFlags = new Uint8Array(guest.blockCount);
    this.zeroBlock = new Uint8Array(guest.blockSize);
    this.writer = new PageWriter(options.copyPages ?? null);
  }

  private async next(): Promise<ChannelMessage> {
    const msg = await this.channel.receive();
    if (msg === null) throw new FerryError('ERR_FERRY_NETWORK', 'the source ended the channel before the migration was complete');
    this.bytesReceived += msg.payload.length;
    if (msg.type === MSG.ABORT) {
      const a = decodeJson<{ code: unknown; message: unknown }>(msg.type, msg.payload);
      this.sourceAborted = true;
      throw new FerryError('ERR_FERRY_ABORTED', `the source aborted: ${String(a.code)}: ${String(a.message)}`);
    }
    return msg;
  }

  /** Whether the source verifies. */
  private checkBegin(payload: Uint8Array): boolean {
    const b = decodeJson<Begin>(MSG.BEGIN, payload);
    const g = this.guest;
    if (intField(b, 'version', MSG.BEGIN) !== ENGINE_VERSION) {
      throw new FerryError('ERR_FERRY_REFUSED', `source speaks engine version ${b.version}, this side ${ENGINE_VERSION}`);
    }
    if (b.migrationId !== this.options.migrationId) throw new FerryError('ERR_FERRY_REFUSED', 'BEGIN names another migration');
    for (const [field, mine] of [
      ['memoryBytes', g.memoryBytes],
      ['diskBytes', g.diskBytes],
      ['pageSize', g.pageSize],
      ['blockSize', g.blockSize],
    ] as const) {
      const theirs = intField(b, field, MSG.BEGIN);
      if (theirs !== mine) throw new FerryError('ERR_FERRY_REFUSED', `source guest has ${field} ${theirs}, this guest ${mine}`);
    }
    return b.verify === true;
  }

  /**
   * Units that landed: the test hook hears of memory pages, then verify tags them as they now are
   * here, read back (a zero run scanned, so a unit it failed to zero is tagged from its bytes).
   */
  private landed(memory: boolean, first: number, count: number, zero: boolean): void {
    if (memory) this.guest.pagesLanded?.(first, count, zero);
    this.digests?.update(memory ? SPACE_MEMORY : SPACE_DISK, first, count, null, zero ? 'scan' : NO_ZEROS);
  }

  private landedCopies(copies: PageCopy[]): void {
    for (const c of copies) this.landed(true, c.first, c.count, false);
  }

  /**
   * Applies one DATA message: disk blocks and zero runs at once, memory pages as the copies it
   * returns, which the caller queues on the page writer — none when the channel opened the message
   * in place (`placed`: its pages are in guest memory already).
   */
  private async apply(m: DataMessage, placed: boolean): Promise<PageCopy[]> {
    const g = this.guest;
    const memory = m.space === SPACE_MEMORY;
    const size = memory ? g.pageSize : g.blockSize;
    const flags = memory ? this.pageFlags : this.blockFlags;
    const counts = this.counts[m.space]!;
    const copies: PageCopy[] = [];
    let at = 0;
    for (const run of m.runs) {
      if (run.kind === RUN_DATA) {
        const bytes = run.count * size;
        const data = m.data.subarray(at, at + bytes);
        at += bytes;
        if (memory && placed) {
          // Opened where it belongs; the payload delivered was only the header and run table.
          this.bytesReceived += bytes;
          this.landed(true, run.first, run.count, false);
        } else if (memory) {
          for (let p = run.first, off = 0; p < run.first + run.count;) {
            const n = g.pageRunLimit(p, run.first + run.count - p);
            copies.push({ first: p, count: n, into: g.memoryPages(p, n), from: data.subarray(off, off + n * size) });
            p += n;
            off += n * size;
          }
        } else {
          g.writeBlocks(run.first, run.count, data);
          this.landed(false, run.first, run.count, false);
        }
        flags.fill(RECEIVED | WRITTEN, run.first, run.first + run.count);
        counts.dataUnits += run.count;
        counts.dataBytes += bytes;
      } else {
        // Units never written here are still zero (fresh memory, emptied disk): nothing to do.
        for (let u = run.first; u < run.first + run.count; u++) {
          if (flags[u]! & WRITTEN) {
            if (memory) {
              // A page written before and zero now (rare: a later pass): every earlier write to
              // it, in flight or earlier in this message, lands first. The payload is released
              // by the message's last write, after this one has landed.
              const before = copies.splice(0);
              await this.writer.write(before, () => this.landedCopies(before));
              await this.writer.drain();
              g.memoryPages(u, 1).fill(0);
            } else {
              g.writeBlocks(u, 1, this.zeroBlock);
            }
          }
          flags[u] = RECEIVED;
        }
        this.landed(memory, run.first, run.count, true);
        counts.zeroUnits += run.count;
      }
    }
    return copies;
  }

  private checkComplete(c: Complete): void {
    const mismatch = (what: string, theirs: unknown, mine: unknown): FerryError =>
      new FerryError('ERR_FERRY_FRAME', `count mismatch: source sent ${String(theirs)} ${what}, destination received ${String(mine)}`);
    if (intField(c, 'dataMessages', MSG.COMPLETE) !== this.dataMessages) throw mismatch('DATA messages', c.dataMessages, this.dataMessages);
    if (intField(c, 'passes', MSG.COMPLETE) !== this.passes.length) throw mismatch('passes', c.passes, this.passes.length);
    for (const [name, space] of [
      ['memory', SPACE_MEMORY],
      ['disk', SPACE_DISK],
    ] as const) {
      const theirs = c[name];
      const mine = this.counts[space]!;
      if (theirs === null || typeof theirs !== 'object') throw new FerryError('ERR_FERRY_FRAME', `COMPLETE lacks ${name} counts`);
      for (const k of ['dataUnits', 'zeroUnits', 'dataBytes'] as const) {
        if (intField(theirs, k, MSG.COMPLETE) !== mine[k]) throw mismatch(`${name} ${k}`, theirs[k], mine[k]);
      }
    }
    const missingPage = this.pageFlags.indexOf(0);
    if (missingPage >= 0) throw new FerryError('ERR_FERRY_FRAME', `page ${missingPage} never arrived`);
    const missingBlock = this.blockFlags.indexOf(0);
    if (missingBlock >= 0) throw new FerryError('ERR_FERRY_FRAME', `disk block ${missingBlock} never arrived`);
    if (this.device === null) throw new FerryError('ERR_FERRY_FRAME', 'COMPLETE came before the device state');
    this.options.checkDevice(this.device);
  }

  async run(): Promise<MigrationResult> {
    const outcome = new Outcome('destination', this.options.migrationId);
    let committing = false;
    try {
      const first = await this.next();
      if (first.type !== MSG.BEGIN) throw new FerryError('ERR_FERRY_FRAME', `expected BEGIN, got message ${first.type}`);
      const verify = this.checkBegin(first.payload);
      await this.channel.send(MSG.BEGIN_OK, encodeJson({ version: ENGINE_VERSION }));
      // After BEGIN_OK: the source times the round trip by it, and a large guest's ledgers take a while.
      if (verify) {
        const key = await this.next();
        try {
          if (key.type !== MSG.VERIFY_KEY) throw new FerryError('ERR_FERRY_FRAME', `expected VERIFY_KEY, got message ${key.type}`);
          if (key.payload.length !== VERIFY_KEY_BYTES) {
            throw new FerryError('ERR_FERRY_FRAME', `VERIFY_KEY of ${key.payload.length} bytes, not ${VERIFY_KEY_BYTES}`);
          }
          this.digests = chunkDigestsOf(this.guest, key.payload);
          this.sourceHashes = new SourceChunkHashes(this.digests);
        } finally {
          key.payload.fill(0);
        }
      }

      let complete: Complete | null = null;
      const g = this.guest;
      const unitsIn = (space: number): number => (space === SPACE_MEMORY ? g.pageCount : g.blockCount);
      const unitBytes = (space: number): number => (space === SPACE_MEMORY ? g.pageSize : g.blockSize);
      let passStarted = performance.now();
      while (complete === null) {
        const msg = await this.next();
        switch (msg.type) {
          case MSG.DATA:
            if (this.device !== null) throw new FerryError('ERR_FERRY_FRAME', 'DATA after the device state');
            if (msg.placed) {
              if (!this.options.inPlace)
                throw new FerryError('ERR_FERRY_INTERNAL', 'the channel placed a DATA message, but no opener was given');
              await this.apply(this.options.inPlace.take(msg.payload), true);
              this.openedInPlace++;
            } else {
              // Once its pages are in guest memory (or it was refused), nothing holds the payload.
              let copies: PageCopy[] = [];
              try {
                copies = await this.apply(decodeData(msg.payload, unitsIn, unitBytes), false);
              } finally {
                await this.writer.write(copies, () => {
                  this.landedCopies(copies);
                  this.options.payloads?.release(msg.payload);
                });
              }
            }
            this.dataMessages++;
            break;
          case MSG.PASS_END: {
            const p = decodeJson<PassReport>(msg.type, msg.payload);
            const pass = intField(p, 'pass', msg.type);
            if (pass !== this.passes.length + 1) throw new FerryError('ERR_FERRY_FRAME', `pass ${pass} ended out of order`);
            const now = performance.now();
            this.passes.push({
              pass,
              pages: intField(p, 'pages', msg.type),
              zeroPages: intField(p, 'zeroPages', msg.type),
              blocks: intField(p, 'blocks', msg.type),
              zeroBlocks: intField(p, 'zeroBlocks', msg.type),
              bytes: 0,
              durationMs: now - passStarted,
            });
            passStarted = now;
            // Every page of the pass has landed, so is tagged (verify), before it is acknowledged.
            await this.writer.drain();
            this.digests?.mark();
            await this.channel.send(MSG.PASS_ACK, encodeJson({ pass }));
            this.onEvent({ type: 'progress', role: 'destination', pass, bytesReceived: this.bytesReceived });
            break;
          }
          case MSG.DEVICE:
            if (this.device !== null) throw new FerryError('ERR_FERRY_FRAME', 'a second device state');
            this.device = decodeJson<object>(msg.type, msg.payload);
            break;
          case MSG.CHUNK_DIGESTS:
            if (!this.sourceHashes) throw new FerryError('ERR_FERRY_FRAME', 'chunk hashes out of place');
            this.sourceHashes.accept(msg.payload);
            break;
          case MSG.COMPLETE:
            complete = decodeJson<Complete>(msg.type, msg.payload);
            break;
          default:
            throw new FerryError('ERR_FERRY_FRAME', `unexpected migration message ${msg.type} from the source`);
        }
      }
      await this.writer.drain();
      this.checkComplete(complete);
      const sourceDigest = typeof complete.digest === 'string' ? complete.digest : null;
      outcome.sourceDigest = sourceDigest;
      if (this.digests && complete.verify !== undefined) {
        outcome.destinationDigest = this.verifyChunks(complete, outcome);
      } else if (sourceDigest !== null) {
        // A source of before chunk hashes sends its whole-guest digest: compared the old way.
        outcome.destinationDigest = await g.digest();
        if (outcome.destinationDigest !== sourceDigest) {
          throw new FerryError(
            'ERR_FERRY_ABORTED',
            `verify failed: source digest ${sourceDigest}, destination ${outcome.destinationDigest}`,
          );
        }
      } else if (this.digests) {
        throw new FerryError('ERR_FERRY_FRAME', 'the source asked to verify, and its COMPLETE carries no digest');
      }
      this.onEvent({ type: 'ready-to-commit', sourceDigest, digest: outcome.destinationDigest });
      const decision = await this.options.decide({ sourceDigest, digest: outcome.destinationDigest });
      if (decision !== 'commit') throw new FerryError('ERR_FERRY_ABORTED', 'the destination agent decided not to commit');
      // Committed: from here on this host runs the guest, whatever happens to the channel, and
      // nothing may tell the source otherwise.
      committing = true;
      await this.options.resume(this.device!);
      outcome.outcome = 'committed';
      this.onEvent({ type: 'committed', downtimeMs: null });
      // If COMMITTED is lost, the source's agent asks this side's agent, which has the record.
      await farewell(this.channel, { type: MSG.COMMITTED, body: { digest: outcome.destinationDigest } });
      return this.finish(outcome);
    } catch (err) {
      const e = toFerryError(err);
      outcome.error = e.toJSON();
      if (committing) {
        outcome.outcome = 'committed';
        return this.finish(outcome);
      }
      outcome.outcome = 'aborted';
      // No copy may still be writing into buffers the pool is about to let go of.
      await this.writer.drain().catch(() => {});
      if (this.sourceAborted && !this.channel.error) this.channel.abort(e);
      // "Not committed", and never will be: this process exits without running the guest.
      await farewell(this.channel, { type: MSG.ABORT, body: { code: e.code, message: e.message } });
      this.onEvent({ type: 'aborted', code: e.code, message: e.message });
      return this.finish(outcome);
    }
  }

  /**
   * Compares the source's chunk tags with this side's (every landed unit already tagged, the chunk
   * tags brought up to date now); throws naming the first chunk that differs. Returns this side's root.
   */
  private verifyChunks(complete: Complete, outcome: Outcome): string {
    const digests = this.digests!;
    const v = complete.verify;
    if (
      v === null ||
      typeof v !== 'object' ||
      v.algorithm !== VERIFY_ALGORITHM ||
      v.chunkBytes !== CHUNK_BYTES ||
      typeof complete.digest !== 'string'
    ) {
      throw new FerryError(
        'ERR_FERRY_REFUSED',
        `the source verifies with ${JSON.stringify(v ?? null)}; this side with ${VERIFY_ALGORITHM}`,
      );
    }
    const root = digests.settle(2);
    const mismatch = this.sourceHashes!.compare(complete.digest, root);
    outcome.verification = digests.report(this.sourceHashes!.total, mismatch);
    if (mismatch) {
      throw new FerryError(
        'ERR_FERRY_ABORTED',
        `verify failed: ${mismatch.space} chunk ${mismatch.chunk} (bytes ${mismatch.offset}-${mismatch.offset + mismatch.bytes - 1} of ${mismatch.space}) differs between source and destination; the guest stays on the source`,
      );
    }
    return root;
  }

  private finish(outcome: Outcome): MigrationResult {
    this.digests?.stop();
    const pool = this.options.payloads;
    pool?.clear();
    this.options.inPlace?.clear();
    return outcome.result({
      passes: this.passes,
      totalMs: performance.now() - this.started,
      bytesSent: this.channel.stats.bytesSent,
      bytesReceived: this.bytesReceived,
      zeroPagesSkipped: this.counts[SPACE_MEMORY]!.zeroUnits,
      throttlePercent: 0,
      cpu: process.cpuUsage(this.cpuStart),
      channel: this.channel,
      payloadBuffers: pool ? { allocated: pool.stats.allocated, reused: pool.stats.reused } : null,
      openedInPlace: this.openedInPlace,
    });
  }
}

export async function migrateDestination(
  channel: Channel,
  guest: DestinationGuest,
  options: DestinationOptions,
  onEvent: (event: MigrationEvent) => void = () => {},
): Promise<MigrationResult> {
  return new DestinationMigration(channel, guest, options, onEvent).run();
}
