/**
 * The destination's in-place opener on its own, over guest memory of real SharedArrayBuffers in
 * two slots: where a DATA message's bytes would go, what it leaves to the channel (disk, other
 * messages, malformed run tables), and that what is delivered must be the bytes that were peeked.
 */
import assert from 'node:assert/strict';
import { FerryError } from '../../src/errors.js';
import { InPlaceOpener } from '../../src/migration/in-place.js';
import { DataBuilder, MSG, SPACE_DISK } from '../../src/migration/messages.js';
import type { DestinationGuest } from '../../src/migration/types.js';

const PAGE = 4096;
const SLOT_PAGES = 16;

/** 32 pages of guest memory in two slots of 16, as a guest of several memory slots has them. */
function guestMemory(): DestinationGuest & { slots: Uint8Array[] } {
  const slots = [0, 1].map(() => new Uint8Array(new SharedArrayBuffer(SLOT_PAGES * PAGE)));
  return {
    slots,
    memoryBytes: 2 * SLOT_PAGES * PAGE,
    diskBytes: 8 * PAGE,
    pageSize: PAGE,
    blockSize: PAGE,
    pageCount: 2 * SLOT_PAGES,
    blockCount: 8,
    memoryPages: (first, count) =>
      slots[Math.floor(first / SLOT_PAGES)]!.subarray((first % SLOT_PAGES) * PAGE, ((first % SLOT_PAGES) + count) * PAGE),
    pageRunLimit: (first, max) => Math.min(max, SLOT_PAGES - (first % SLOT_PAGES)),
    writeBlocks: () => {},
    readBlocks: (_first, _count, into) => into,
    digest: async () => '',
  };
}

function flat(message: Uint8Array | Uint8Array[]): Buffer {
  return Buffer.concat(message instanceof Uint8Array ? [message] : message);
}

const peekOf = (bytes: Uint8Array) => async (offset: number, length: number) => Uint8Array.from(bytes.subarray(offset, offset + length));

describe('opening DATA in place (the destination side)', () => {
  it('puts data runs into the guest memory they name, split where a memory slot ends; header and run table into the delivered payload', async () => {
    const g = guestMemory();
    const b = new DataBuilder();
    const pages = Buffer.alloc(20 * PAGE);
    for (let i = 0; i < pages.length; i += 512) pages[i] = (i / 512) & 0xff;
    b.addData(2, 3, pages.subarray(0, 3 * PAGE));
    b.addZero(5, 2);
    b.addData(10, 17, pages.subarray(3 * PAGE)); // pages 10..26: across the end of slot 0
    const message = flat(b.take());
    const opener = new InPlaceOpener(g);
    const placed = await opener.place(MSG.DATA, message.length, peekOf(message));
    assert.ok(placed);
    assert.equal(
      placed.segments.reduce((n, s) => n + s.length, 0),
      message.length,
    );
    assert.deepEqual(
      placed.segments.map((s) => s.length),
      [8, 3 * PAGE, 6 * PAGE, 11 * PAGE, 3 * 12],
    );
    assert.equal(placed.segments[1]!.buffer, g.slots[0]!.buffer);
    assert.equal(placed.segments[3]!.buffer, g.slots[1]!.buffer);
    // What an open would do: the plaintext in order over the segments.
    let at = 0;
    for (const s of placed.segments) {
      s.set(message.subarray(at, at + s.length));
      at += s.length;
    }
    assert.ok(Buffer.from(g.memoryPages(2, 3)).equals(pages.subarray(0, 3 * PAGE)));
    assert.ok(Buffer.from(g.slots[1]!.subarray(0, 11 * PAGE)).equals(pages.subarray(9 * PAGE)));
    assert.equal(opener.placedPending, 1);
    const m = opener.take(placed.payload);
    assert.deepEqual(m.runs, [
      { first: 2, count: 3, kind: 0 },
      { first: 5, count: 2, kind: 1 },
      { first: 10, count: 17, kind: 0 },
    ]);
    assert.equal(m.data.length, 0);
    assert.equal(opener.placedPending, 0);
  });

  it('leaves disk blocks and every other message type to the channel', async () => {
    const opener = new InPlaceOpener(guestMemory());
    const b = new DataBuilder();
    b.space = SPACE_DISK;
    b.addData(0, 1, Buffer.alloc(PAGE, 1));
    const disk = flat(b.take());
    assert.equal(await opener.place(MSG.DATA, disk.length, peekOf(disk)), null);
    assert.equal(await opener.place(MSG.DEVICE, 10, peekOf(Buffer.alloc(10))), null);
    assert.equal(opener.placedPending, 0);
  });

  it("refuses a run table that is malformed or outside guest memory, as the channel's usual path would", async () => {
    const opener = new InPlaceOpener(guestMemory());
    const b = new DataBuilder();
    b.addData(30, 2, Buffer.alloc(2 * PAGE, 1));
    const good = flat(b.take());
    const outside = Buffer.from(good);
    outside.writeUInt32LE(31, outside.length - 12); // pages 31..32 of 32
    await assert.rejects(
      Promise.resolve(opener.place(MSG.DATA, outside.length, peekOf(outside))),
      (e: FerryError) => e.code === 'ERR_FERRY_FRAME' && /outside 32 units/.test(e.message),
    );
    await assert.rejects(
      Promise.resolve(opener.place(MSG.DATA, good.length - 1, peekOf(good))),
      (e: FerryError) => e.code === 'ERR_FERRY_FRAME',
    );
    assert.equal(opener.placedPending, 0);
  });

  it('refuses a delivered header or run table that differs from the bytes peeked, and one it never placed', async () => {
    const opener = new InPlaceOpener(guestMemory());
    const b = new DataBuilder();
    b.addData(0, 1, Buffer.alloc(PAGE, 1));
    const message = flat(b.take());
    const placed = (await opener.place(MSG.DATA, message.length, peekOf(message)))!;
    placed.payload.set(message.subarray(0, 8));
    placed.payload.set(message.subarray(message.length - 12), 8);
    placed.payload[9]! ^= 1; // the run's first page, as delivered, is not the one peeked
    assert.throws(
      () => opener.take(placed.payload),
      (e: FerryError) => e.code === 'ERR_FERRY_FRAME' && /differ from the bytes peeked/.test(e.message),
    );
    assert.throws(
      () => opener.take(Buffer.alloc(20)),
      (e: FerryError) => e.code === 'ERR_FERRY_INTERNAL',
    );
  });
});
