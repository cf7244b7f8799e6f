/**
 * Zero-page detection, through the addon's scan and the TypeScript fallback: edge cases, agreement
 * with a plain reference on random buffers, and a buffer beyond 4 GiB.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { skipBecause } from '../support/backends.js';
import {
  zeroPages,
  zeroPagesAsync,
  zeroPagesTs,
  zeroPagesUnread,
  nativeUnavailableReason,
  type ZeroPageSource,
} from '../../src/crypto/index.js';

type Scan = (buffer: ZeroPageSource, pageSize?: number) => Promise<Uint32Array>;

function reference(buf: Uint8Array, pageSize: number): number[] {
  const out: number[] = [];
  for (let p = 0; p * pageSize < buf.length; p++) {
    if (buf.subarray(p * pageSize, (p + 1) * pageSize).every((b) => b === 0)) out.push(p);
  }
  return out;
}

// Every scan, made async alike; the sync ones still throw synchronously, which `async` turns into
// rejections for the tests below.
const scanners: { label: string; scan: Scan; reason: () => string | null }[] = [
  { label: 'native', scan: async (b, p) => zeroPages(b, p), reason: nativeUnavailableReason },
  { label: 'native, async', scan: zeroPagesAsync, reason: nativeUnavailableReason },
  { label: 'native, unread pages', scan: async (b, p) => zeroPagesUnread(b, p), reason: nativeUnavailableReason },
  { label: 'typescript', scan: async (b, p) => zeroPagesTs(b, p), reason: () => null },
];

for (const { label, scan, reason } of scanners) {
  describe(`zero pages [${label}]`, function () {
    before(function () {
      const why = reason();
      if (why !== null) skipBecause(this, label, why);
    });

    it('finds nothing in an empty buffer', async function () {
      assert.deepEqual([...(await scan(Buffer.alloc(0)))], []);
      assert.deepEqual([...(await scan(new ArrayBuffer(0), 64))], []);
    });

    it('counts a partial last page, zero or not', async function () {
      const buf = Buffer.alloc(3 * 4096 + 100, 1).fill(0); // written memory, not the kernel's zero page
      assert.deepEqual([...(await scan(buf))], [0, 1, 2, 3]);
      buf[buf.length - 1] = 1;
      assert.deepEqual([...(await scan(buf))], [0, 1, 2]);
      assert.deepEqual([...(await scan(buf.subarray(0, 5)))], [0]);
    });

    it('sees one non-zero byte at the first and at the last offset of every page', async function () {
      const pages = 6;
      for (const pageSize of [4096, 4000, 64]) {
        const buf = Buffer.alloc(pages * pageSize);
        for (let p = 0; p < pages; p++) {
          for (const offset of [0, pageSize - 1]) {
            buf[p * pageSize + offset] = 0x80;
            const expected = [...Array(pages).keys()].filter((i) => i !== p);
            assert.deepEqual([...(await scan(buf, pageSize))], expected, `page ${p} offset ${offset} size ${pageSize}`);
            buf[p * pageSize + offset] = 0;
          }
        }
      }
    });

    it('works on unaligned views and SharedArrayBuffers', async function () {
      const shared = new SharedArrayBuffer(4 * 4096 + 3);
      const view = new Uint8Array(shared, 3);
      view[4096 + 17] = 5;
      assert.deepEqual([...(await scan(view))], [0, 2, 3]);
      assert.deepEqual([...(await scan(shared))], [0, 2, 3, 4]); // its 3 extra bytes are a fifth page
    });

    it('agrees with a byte-by-byte reference on random sparse buffers and page sizes', async function () {
      const arb = fc.record({
        length: fc.nat({ max: 20_000 }),
        offset: fc.nat({ max: 31 }),
        pageSize: fc.constantFrom(1, 7, 32, 33, 255, 256, 4096, 5000),
        marks: fc.array(fc.nat(), { maxLength: 8 }),
      });
      await fc.assert(
        fc.asyncProperty(arb, async ({ length, offset, pageSize, marks }) => {
          const buf = Buffer.alloc(length + offset).subarray(offset);
          for (const m of marks) if (length > 0) buf[m % length] = 1 + (m & 0x7f);
          assert.deepEqual([...(await scan(buf, pageSize))], reference(buf, pageSize));
        }),
        { numRuns: 200 },
      );
    });

    it('refuses bad page sizes and inputs with a RangeError or TypeError', async function () {
      for (const bad of [0, -1, 1.5, 2 ** 31, Number.NaN]) {
        await assert.rejects(scan(Buffer.alloc(10), bad), RangeError, String(bad));
      }
      await assert.rejects(scan('abc' as unknown as Uint8Array), TypeError);
    });

    it('scans an ArrayBuffer larger than 4 GiB', async function () {
      const size = 5 * 2 ** 30 + 8192 + 10;
      let big: ArrayBuffer;
      try {
        big = new ArrayBuffer(size); // never written: the kernel maps its zero page, so this costs no memory
      } catch (err) {
        console.log(`      skipped: cannot allocate a 5 GiB ArrayBuffer here: ${(err as Error).message}`);
        this.skip();
      }
      this.timeout(60_000);
      const pageSize = 4096;
      const marked = [0, 2 ** 20 - 1, 2 ** 20, 2 ** 20 + 1, Math.floor(size / pageSize)];
      for (const p of marked) new Uint8Array(big, Math.min(p * pageSize + 1, size - 1), 1)[0] = 1;
      const found = await scan(big, pageSize);
      const pages = Math.ceil(size / pageSize);
      assert.equal(found.length, pages - marked.length);
      assert.equal(found[0], 1);
      assert.equal(found[found.length - 1], pages - 2);
      for (const p of marked) assert.ok(!found.includes(p), `page ${p} is not zero`);
      assert.ok(found.includes(2 ** 20 + 2) && found.includes(2 ** 20 - 2));
    });
  });
}

describe('zero pages of memory never touched [native, unread pages]', function () {
  before(function () {
    const why = nativeUnavailableReason();
    if (why !== null) skipBecause(this, 'native', why);
  });

  // Fresh SharedArrayBuffers (private anonymous memory), so the pages the kernel never mapped are
  // taken as zero unread: each case checks that shortcut against a scan of the same bytes made
  // afterwards (which maps them), so a page wrongly taken as unmapped shows as a difference.
  it('agrees with a scan on fresh memory written here and there, at any offset and page size', function () {
    const arb = fc.record({
      pages: fc.integer({ min: 1, max: 600 }),
      offset: fc.nat({ max: 5000 }),
      pageSize: fc.constantFrom(1000, 4096, 8192, 12_288, 65_536),
      writes: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 12 }),
    });
    fc.assert(
      fc.property(arb, ({ pages, offset, pageSize, writes }) => {
        const shared = new SharedArrayBuffer(pages * pageSize + offset);
        const view = new Uint8Array(shared, offset);
        // A write of zero maps its page and leaves it zero: mapped, yet found zero by the scan.
        for (const w of writes) view[w.at % view.length] = w.value;
        const unread = [...zeroPagesUnread(view, pageSize)];
        assert.deepEqual(unread, [...zeroPages(view, pageSize)]);
        assert.deepEqual(unread, reference(view, pageSize));
      }),
      { numRuns: 60 },
    );
  });

  it('takes a page as zero only while it is: fresh, written, zeroed again', function () {
    const shared = new SharedArrayBuffer(64 * 4096);
    const view = new Uint8Array(shared);
    assert.equal(zeroPagesUnread(view).length, 64);
    view[5 * 4096 + 4095] = 1;
    view[63 * 4096] = 9;
    assert.deepEqual(
      [...zeroPagesUnread(view)].filter((p) => p === 5 || p === 63),
      [],
    );
    assert.equal(zeroPagesUnread(view).length, 62);
    view[5 * 4096 + 4095] = 0;
    assert.equal(zeroPagesUnread(view).length, 63);
  });

  it('scans buffers it cannot ask the kernel about: a Buffer from the pool, an empty one', function () {
    const pooled = Buffer.from('not zero at all');
    assert.deepEqual([...zeroPagesUnread(pooled, 4)], []);
    assert.deepEqual([...zeroPagesUnread(new Uint8Array(0))], []);
    assert.throws(() => zeroPagesUnread('abc' as unknown as Uint8Array), TypeError);
    assert.throws(() => zeroPagesUnread(new Uint8Array(8), 0), RangeError);
  });
});
