/**
 * Opening DATA straight into guest memory: the destination's ChannelOptions.placePayload.
 *
 * Without it an encrypted DATA message is opened into a payload buffer and its pages are then
 * copied into guest memory: a second pass over every byte, on a core the migration shares with the
 * sockets. With it the channel asks, before it opens a memory DATA message, where the plaintext
 * goes: the header and the run table into a small buffer of their own, each data run into the guest
 * memory it belongs in. To know which pages, it reads the header and run table first with the
 * key's `peek` (AES-CTR: the same bytes the open will give, but not yet authenticated).
 *
 * Why this is safe (docs/protocol.md, "Opening in place"):
 * - A forged or corrupted message can at worst put garbage into this destination guest's memory,
 *   within its bounds (the peeked table passes the same checks as every run table), before its tag
 *   fails. A failed tag fails the channel, so the migration aborts and this guest never runs.
 * - What the engine acts on is authenticated: the channel delivers the header and run table opened
 *   under the tag, and take() checks they are the bytes that were peeked.
 * - Order. Within a pass the source sends each page at most once, and it starts the next pass only
 *   after PASS_ACK, which goes once every message of the pass was delivered (so opened). No two
 *   opens in flight write the same page, and the writes to a page land in pass order. A
 *   retransmission of a message that already arrived is never placed (the channel opens it into a
 *   buffer of its own and drops it), so nothing old is written over something newer.
 * - Disk blocks are not placed: they go to the guest's disk file through the usual path.
 */
import { FerryError } from '../errors.js';
import type { PlacePayload } from '../channel/types.js';
import { DATA_HEADER_BYTES, MSG, RUN_DATA, SPACE_MEMORY, decodeDataHeader, decodeRunTable, type DataMessage } from './messages.js';
import type { DestinationGuest } from './types.js';

const NO_DATA = new Uint8Array(0);

export class InPlaceOpener {
  /** Placed messages not yet taken: keyed by the buffer their header and run table are opened into. */
  private readonly pending = new Map<Uint8Array, { message: DataMessage; peeked: Buffer }>();

  constructor(private readonly guest: DestinationGuest) {}

  /** Messages placed and not yet taken. */
  get placedPending(): number {
    return this.pending.size;
  }

  /** The channel's placePayload: memory DATA goes to guest memory, everything else as usual. */
  readonly place: PlacePayload = async (messageType, length, peek) => {
    if (messageType !== MSG.DATA) return null;
    const head = await peek(0, DATA_HEADER_BYTES);
    const h = decodeDataHeader(head, length);
    if (h.space !== SPACE_MEMORY) return null;
    const table = await peek(h.tableStart, length - h.tableStart);
    const g = this.guest;
    const runs = decodeRunTable(table, h, g.pageCount, g.pageSize);
    // Receives the authenticated header and run table: what receive() delivers.
    const meta = Buffer.allocUnsafe(DATA_HEADER_BYTES + table.length);
    const segments: Uint8Array[] = [meta.subarray(0, DATA_HEADER_BYTES)];
    for (const run of runs) {
      if (run.kind !== RUN_DATA) continue;
      for (let p = run.first, end = run.first + run.count; p < end;) {
        const n = g.pageRunLimit(p, end - p);
        segments.push(g.memoryPages(p, n));
        p += n;
      }
    }
    segments.push(meta.subarray(DATA_HEADER_BYTES));
    this.pending.set(meta, { message: { space: h.space, pass: h.pass, runs, data: NO_DATA }, peeked: Buffer.concat([head, table]) });
    return { segments, payload: meta };
  };

  /**
   * The layout of a message the channel delivered placed (its pages already in guest memory), once
   * its authenticated header and run table are checked to be the bytes peeked. Its `data` is empty.
   */
  take(payload: Uint8Array): DataMessage {
    const entry = this.pending.get(payload);
    if (!entry) throw new FerryError('ERR_FERRY_INTERNAL', 'a DATA message was delivered placed, but not placed here');
    this.pending.delete(payload);
    if (!entry.peeked.equals(payload)) {
      throw new FerryError(
        'ERR_FERRY_FRAME',
        'the header and run table of a DATA message opened in place differ from the bytes peeked before',
      );
    }
    return entry.message;
  }

  /** Forgets every placed message not taken (the migration ended). */
  clear(): void {
    this.pending.clear();
  }
}
