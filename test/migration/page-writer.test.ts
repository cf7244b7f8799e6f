/**
 * The destination's page writer: pages copied into real guest-sized SharedArrayBuffer memory by the
 * addon's copyBatch on the libuv pool (and inline without it), in arrival order wherever two
 * writes touch the same page, each message's `done` exactly once, never more copies in flight
 * than allowed, and a failed copy reported, not lost.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { pageCopier } from '../../src/crypto/index.js';
import { PageWriter, type CopyBatch, type PageCopy } from '../../src/migration/page-writer.js';

const PAGE = 4096;

/** Guest memory of `pages` pages in a SharedArrayBuffer, as the synthetic guest has it. */
function memory(pages: number): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(pages * PAGE));
}

function copyOf(mem: Uint8Array, first: number, from: Uint8Array): PageCopy {
  const count = from.length / PAGE;
  return { first, count, into: mem.subarray(first * PAGE, (first + count) * PAGE), from };
}

/** The addon's copy, or the test is skipped with the reason. */
function addonCopy(ctx: Mocha.Context): CopyBatch {
  const copy = pageCopier();
  if (!copy) {
    console.log('      skipped: the native addon is not built (npm run build:native)');
    ctx.skip();
  }
  return copy!;
}

/** Wraps a copy so that the test can see how many run at once and hold them back a while. */
function watched(copy: CopyBatch, delayMs: (call: number) => number): { copy: CopyBatch; maxAtOnce: () => number } {
  let running = 0;
  let max = 0;
  let calls = 0;
  return {
    copy: async (flat) => {
      const call = calls++;
      running++;
      max = Math.max(max, running);
      try {
        await new Promise((r) => setTimeout(r, delayMs(call)));
        await copy(flat);
      } finally {
        running--;
      }
    },
    maxAtOnce: () => max,
  };
}

describe('PageWriter', function () {
  it('copies every message into guest memory on the pool, bit for bit, each done once', async function () {
    const writer = new PageWriter(addonCopy(this));
    assert.equal(writer.offThread, true);
    const mem = memory(1024);
    const expected = Buffer.alloc(mem.length);
    const done: number[] = [];
    for (let m = 0; m < 64; m++) {
      const first = m * 16;
      const data = randomBytes(16 * PAGE);
      data.copy(expected, first * PAGE);
      // Two copies per message, as a run cut at a slot boundary gives.
      await writer.write([copyOf(mem, first, data.subarray(0, 8 * PAGE)), copyOf(mem, first + 8, data.subarray(8 * PAGE))], () =>
        done.push(m),
      );
    }
    await writer.drain();
    assert.deepEqual(
      [...done].sort((a, b) => a - b),
      [...Array(64).keys()],
    );
    assert.ok(Buffer.from(mem.buffer).equals(expected), 'guest memory holds every page as sent');
  });

  it('keeps arrival order for writes to the same page, however long the first one takes', async function () {
    // The first copy is held back 80 ms; the second, to an overlapping page, must still land last.
    const w = watched(addonCopy(this), (call) => (call === 0 ? 80 : 0));
    const writer = new PageWriter(w.copy);
    const mem = memory(8);
    const older = Buffer.alloc(4 * PAGE, 0xaa);
    const newer = Buffer.alloc(2 * PAGE, 0xbb);
    await writer.write([copyOf(mem, 0, older)], () => {});
    await writer.write([copyOf(mem, 3, newer)], () => {});
    await writer.drain();
    assert.ok(Buffer.from(mem.buffer, 0, 3 * PAGE).equals(Buffer.alloc(3 * PAGE, 0xaa)));
    assert.ok(Buffer.from(mem.buffer, 3 * PAGE, 2 * PAGE).equals(newer), 'the later write wins on the shared page');
    assert.equal(w.maxAtOnce(), 1, 'the overlapping copy waited for the first');
  });

  it('runs copies of disjoint pages side by side, never more than its limit', async function () {
    const w = watched(addonCopy(this), () => 20);
    const writer = new PageWriter(w.copy, 3);
    const mem = memory(64);
    for (let m = 0; m < 16; m++) await writer.write([copyOf(mem, m * 4, Buffer.alloc(4 * PAGE, m + 1))], () => {});
    await writer.drain();
    assert.equal(w.maxAtOnce(), 3);
    for (let m = 0; m < 16; m++) assert.equal(mem[m * 4 * PAGE + 5], m + 1);
  });

  it('copies inline without a copy function, done before write returns', async function () {
    const writer = new PageWriter(null);
    assert.equal(writer.offThread, false);
    const mem = memory(4);
    let done = 0;
    await writer.write([copyOf(mem, 1, Buffer.alloc(PAGE, 7))], () => done++);
    assert.equal(done, 1);
    assert.equal(mem[PAGE], 7);
    assert.equal(mem[0], 0);
  });

  it('reports a failed copy at the next write and at drain, and still calls every done', async function () {
    let calls = 0;
    const writer = new PageWriter(async () => {
      calls++;
      throw Object.assign(new Error('copyBatch: a destination and its source differ in length'), { code: 'ERR_FERRY_INTERNAL' });
    });
    const mem = memory(4);
    let done = 0;
    await writer.write([copyOf(mem, 0, Buffer.alloc(PAGE))], () => done++);
    await assert.rejects(
      writer.drain(),
      (e: { code: string; message: string }) => e.code === 'ERR_FERRY_INTERNAL' && /guest memory/.test(e.message),
    );
    await assert.rejects(
      writer.write([copyOf(mem, 1, Buffer.alloc(PAGE))], () => done++),
      { code: 'ERR_FERRY_INTERNAL' },
    );
    assert.equal(calls, 1, 'nothing is copied after a failure');
    assert.equal(done, 2, 'the refused message is done too: its payload goes back');
  });
});

describe('copyBatch (addon)', function () {
  it('copies pairs in order into SharedArrayBuffer memory and refuses pairs of unequal length', async function () {
    const copy = addonCopy(this);
    const mem = memory(2);
    await copy([mem.subarray(0, PAGE), Buffer.alloc(PAGE, 1), mem.subarray(100, 200), Buffer.alloc(100, 2)]);
    assert.equal(mem[99], 1);
    assert.equal(mem[100], 2, 'the second pair, over the first, landed second');
    assert.equal(mem[200], 1);
    // Empty pairs (a message segment of no bytes) are nothing to copy, even beside real ones.
    await copy([Buffer.alloc(0), Buffer.alloc(0), mem.subarray(300, 301), Buffer.alloc(1, 3), new Uint8Array(0), new Uint8Array(0)]);
    assert.equal(mem[300], 3);
    assert.throws(() => copy([mem.subarray(0, 10), Buffer.alloc(11)]), { code: 'ERR_FERRY_INTERNAL' });
    assert.throws(() => copy([mem.subarray(0, 10)]), { code: 'ERR_FERRY_INTERNAL' });
  });
});
