/**
 * Property tests across every backend that loads here (each native implementation separately):
 * byte-identical output, seal in one and open in any other, and any flipped bit fails open.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { type Backend } from '../../src/crypto/index.js';
import { loadAllBackends } from '../support/backends.js';

const key = fc.uint8Array({ minLength: 32, maxLength: 32 });
const iv = fc.uint8Array({ minLength: 12, maxLength: 12 });
// Past 512 bytes, the 512-bit code hashes additional data thirty-two blocks to a reduction.
const aad = fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ minLength: 480, maxLength: 2100 }));
// Sizes around every branch of the VAES code: partial blocks, whole 128-, 256- and 512-byte turns
// (one 512-byte turn and what the 256-bit code finishes, in the middle range), and tails.
const plaintext = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc.uint8Array({ minLength: 300, maxLength: 1100 }),
  fc.uint8Array({ minLength: 1000, maxLength: 5000 }),
);
const message = fc.record({ key, iv, aad, plaintext });
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('crypto properties across backends', function () {
  let backends: { label: string; backend: Backend }[] = [];

  before(async function () {
    const all = await loadAllBackends();
    backends = all.backends;
    for (const m of all.missing) console.log(`      not compared: ${m}`);
    if (backends.length < 2) {
      console.log('      skipped: fewer than two backends load here, nothing to compare');
      this.skip();
    }
  });

  it('all backends give byte-identical sealed output', async function () {
    await fc.assert(
      fc.asyncProperty(message, async (m) => {
        const outs = await Promise.all(backends.map(({ backend }) => backend.seal(m.key, m.iv, m.aad, m.plaintext)));
        for (let i = 1; i < outs.length; i++) {
          assert.equal(hex(outs[i]!), hex(outs[0]!), `${backends[i]!.label} differs from ${backends[0]!.label}`);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('what one backend seals, every other opens', async function () {
    await fc.assert(
      fc.asyncProperty(message, fc.nat(), async (m, pick) => {
        const sealer = backends[pick % backends.length]!;
        const sealed = await sealer.backend.seal(m.key, m.iv, m.aad, m.plaintext);
        for (const { label, backend } of backends) {
          const opened = await backend.open(m.key, m.iv, m.aad, sealed);
          assert.equal(hex(opened), hex(m.plaintext), `${label} opening what ${sealer.label} sealed`);
        }
      }),
      { numRuns: 100 },
    );
  });

  it('any flipped bit in key, IV, AAD, ciphertext or tag makes open fail with ERR_FERRY_AUTH', async function () {
    const part = fc.constantFrom('key', 'iv', 'aad', 'sealed');
    await fc.assert(
      fc.asyncProperty(message, part, fc.nat(), async (m, where, bitPick) => {
        const sealed = Buffer.from(await backends[0]!.backend.seal(m.key, m.iv, m.aad, m.plaintext));
        const parts = { key: Buffer.from(m.key), iv: Buffer.from(m.iv), aad: Buffer.from(m.aad), sealed };
        const target = parts[where];
        if (target.length === 0) return; // an empty AAD has no bit to flip
        const bit = bitPick % (target.length * 8);
        target[bit >> 3]! ^= 1 << (bit & 7);
        for (const { label, backend } of backends) {
          const out = Buffer.alloc(parts.sealed.length - 16, 0xee);
          await assert.rejects(
            backend.importKey(parts.key).then((k) => k.open(parts.iv, parts.aad, parts.sealed, out).finally(() => k.destroy())),
            { code: 'ERR_FERRY_AUTH' },
            `${label}: bit ${bit} of ${where}`,
          );
          assert.ok(
            out.every((b) => b === 0 || b === 0xee),
            `${label} left plaintext in the output`,
          );
        }
      }),
      { numRuns: 100 },
    );
  });

  it('a message shorter than its tag fails open with ERR_FERRY_AUTH in every backend', async function () {
    for (const { label, backend } of backends) {
      for (const length of [0, 1, 15]) {
        await assert.rejects(
          backend.open(Buffer.alloc(32), Buffer.alloc(12), Buffer.alloc(0), Buffer.alloc(length)),
          { code: 'ERR_FERRY_AUTH' },
          `${label} ${length}`,
        );
      }
    }
  });

  it('batch forms, threads 1 and 4, caller outputs and in-place calls all agree with one-shot seal', async function () {
    await fc.assert(
      fc.asyncProperty(key, fc.array(fc.record({ iv, aad, input: plaintext }), { minLength: 1, maxLength: 12 }), async (k, jobs) => {
        const expected = await Promise.all(jobs.map((j) => backends[0]!.backend.seal(k, j.iv, j.aad, j.input)));
        for (const { label, backend } of backends) {
          for (const threads of [1, 4]) {
            const sealed = await backend.sealBatch(k, jobs, { threads });
            assert.deepEqual(sealed.map(hex), expected.map(hex), `${label} sealBatch threads=${threads}`);
            const opened = await backend.openBatch(
              k,
              jobs.map((j, i) => ({ ...j, input: sealed[i]! })),
              { threads },
            );
            assert.deepEqual(
              opened.map(hex),
              jobs.map((j) => hex(j.input)),
              `${label} openBatch threads=${threads}`,
            );
          }
          // In place: the plaintext sits at the start of a buffer with room for the tag.
          const key1 = await backend.importKey(k);
          try {
            for (const [i, j] of jobs.entries()) {
              const buf = Buffer.alloc(j.input.length + 16);
              buf.set(j.input);
              const sealed = await key1.seal(j.iv, j.aad, buf.subarray(0, j.input.length), buf);
              assert.equal(hex(sealed), hex(expected[i]!), `${label} in-place seal`);
              const opened = await key1.open(j.iv, j.aad, buf, buf.subarray(0, j.input.length));
              assert.equal(hex(opened), hex(j.input), `${label} in-place open`);
            }
          } finally {
            key1.destroy();
          }
        }
      }),
      { numRuns: 30 },
    );
  });

  it('a seal of gathered segments is the seal of their concatenation, in every backend and batch form', async function () {
    // Cut points anywhere, empty segments included: pieces that straddle the VAES code's 256- and
    // 128-byte turns are put together from several segments.
    const cuts = fc.array(fc.nat(), { maxLength: 8 });
    await fc.assert(
      fc.asyncProperty(key, iv, aad, plaintext, cuts, fc.boolean(), async (k, v, a, text, at, giveOutput) => {
        const points = [...new Set(at.map((x) => (text.length === 0 ? 0 : x % (text.length + 1))))].sort((x, y) => x - y);
        const parts: Uint8Array[] = [];
        let from = 0;
        for (const p of [...points, text.length]) {
          parts.push(text.subarray(from, p));
          from = p;
        }
        const expected = hex(await backends[0]!.backend.seal(k, v, a, text));
        for (const { label, backend } of backends) {
          for (const threads of [1, 4]) {
            const output = giveOutput ? Buffer.alloc(text.length + 16) : undefined;
            const [sealed] = await backend.sealBatch(k, [{ iv: v, aad: a, input: parts, output }], { threads });
            assert.equal(hex(sealed!), expected, `${label} threads=${threads}, ${parts.length} segments`);
            if (output) assert.equal(sealed, output);
          }
        }
      }),
      { numRuns: 120 },
    );
  });

  it('seals a DATA-shaped message gathered from a header, guest memory pages and a run table (3 MiB, on the pool)', async function () {
    const k = Buffer.alloc(32, 3);
    const memory = new Uint8Array(new SharedArrayBuffer(4 * 1024 * 1024));
    for (let i = 0; i < memory.length; i += 61) memory[i] = (i >>> 6) & 0xff;
    const parts = [
      Buffer.from('8-bytes!'),
      memory.subarray(4096, 4096 + 1024 * 1024),
      memory.subarray(2 * 1024 * 1024 + 8192, 4 * 1024 * 1024),
      Buffer.alloc(36, 0xee),
    ];
    const joined = Buffer.concat(parts);
    const v = Buffer.alloc(12, 2);
    const expected = hex(await backends[0]!.backend.seal(k, v, Buffer.alloc(20, 1), joined));
    for (const { label, backend } of backends) {
      const [sealed] = await backend.sealBatch(
        k,
        [
          { iv: v, aad: Buffer.alloc(20, 1), input: parts },
          { iv: v, aad: Buffer.alloc(20, 1), input: joined },
        ],
        { threads: 2 },
      );
      assert.equal(hex(sealed!), expected, label);
    }
  });

  it('an open scattered over segments puts the plaintext of a contiguous open into them, in every backend', async function () {
    // Cut points anywhere, empty segments included: 512-, 256- and 128-byte pieces that straddle
    // two segments go through the VAES code's small buffer.
    const cuts = fc.array(fc.nat(), { maxLength: 8 });
    await fc.assert(
      fc.asyncProperty(key, iv, aad, plaintext, cuts, async (k, v, a, text, at) => {
        const points = [...new Set(at.map((x) => (text.length === 0 ? 0 : x % (text.length + 1))))].sort((x, y) => x - y);
        const sealed = await backends[0]!.backend.seal(k, v, a, text);
        for (const { label, backend } of backends) {
          for (const threads of [1, 4]) {
            // Segments of one shared buffer, out of order and apart, as pages of guest memory lie.
            const memory = new Uint8Array(new SharedArrayBuffer(2 * text.length + 64));
            const parts: Uint8Array[] = [];
            let from = 0;
            [...points, text.length].forEach((p, i) => {
              const place = i % 2 === 0 ? text.length + 32 + from : from;
              parts.push(memory.subarray(place, place + p - from));
              from = p;
            });
            const [result] = await backend.openBatch(k, [{ iv: v, aad: a, input: sealed, output: parts }], { threads });
            assert.equal(result!.length, 0, `${label}: a scattered job returns an empty array`);
            assert.equal(hex(Buffer.concat(parts)), hex(text), `${label} threads=${threads}, ${parts.length} segments`);
          }
        }
      }),
      { numRuns: 120 },
    );
  });

  it('a scattered open that fails its tag check wipes every segment and rejects with ERR_FERRY_AUTH', async function () {
    const k = Buffer.alloc(32, 5);
    const v = Buffer.alloc(12, 6);
    const text = Buffer.alloc(300_000, 0x5a);
    for (const { label, backend } of backends) {
      const sealed = Buffer.from(await backend.seal(k, v, Buffer.alloc(0), text));
      sealed[sealed.length - 1]! ^= 1;
      const parts = [Buffer.alloc(8, 1), Buffer.alloc(200_000, 1), Buffer.alloc(100_000 - 8, 1)];
      const good = Buffer.alloc(1016, 1);
      await assert.rejects(
        backend.openBatch(
          k,
          [
            { iv: v, aad: Buffer.alloc(0), input: await backend.seal(k, v, Buffer.alloc(0), Buffer.alloc(1016, 9)), output: good },
            { iv: v, aad: Buffer.alloc(0), input: sealed, output: parts },
          ],
          { threads: 2 },
        ),
        (err: Error & { code?: string }) => err.code === 'ERR_FERRY_AUTH',
        label,
      );
      for (const p of [...parts, good])
        assert.ok(
          p.every((b) => b === 0),
          `${label}: an output was left written`,
        );
    }
  });

  it('peek gives the plaintext of any byte range without the tag, the same in every backend', async function () {
    await fc.assert(
      fc.asyncProperty(key, iv, aad, plaintext, fc.nat(), fc.nat(), async (k, v, a, text, x, y) => {
        const sealed = await backends[0]!.backend.seal(k, v, a, text);
        const offset = x % (text.length + 1);
        const length = y % (text.length - offset + 1);
        for (const { label, backend } of backends) {
          const key = await backend.importKey(k);
          try {
            assert.equal(
              hex(await key.peek(v, sealed, offset, length)),
              hex(text.subarray(offset, offset + length)),
              `${label} at ${offset}+${length}`,
            );
          } finally {
            key.destroy();
          }
        }
      }),
      { numRuns: 150 },
    );
  });

  it('refuses scattered output segments that do not add up, overlap each other or the input, and a peek outside the message', async function () {
    const k = Buffer.alloc(32, 4);
    const v = Buffer.alloc(12);
    for (const { label, backend } of backends) {
      const sealed = await backend.seal(k, v, Buffer.alloc(0), Buffer.alloc(100, 3));
      const open = (output: Uint8Array[], input: Uint8Array = sealed) =>
        backend.openBatch(k, [{ iv: v, aad: Buffer.alloc(0), input, output }]);
      await assert.rejects(open([Buffer.alloc(60), Buffer.alloc(39)]), /add up to 100 bytes; got 99/, label);
      const buf = Buffer.alloc(300);
      await assert.rejects(open([buf.subarray(0, 60), buf.subarray(59, 99)]), /overlap each other/, label);
      buf.set(sealed, 100);
      await assert.rejects(open([buf.subarray(0, 50), buf.subarray(150, 200)], buf.subarray(100, 216)), /overlaps the input/, label);
      await assert.rejects(
        backend.sealBatch(k, [{ iv: v, aad: Buffer.alloc(0), input: Buffer.alloc(4), output: [Buffer.alloc(20)] }]),
        /only an open scatters/,
        label,
      );
      const key = await backend.importKey(k);
      try {
        await assert.rejects(key.peek(v, sealed, 90, 11), /outside the 100-byte message/, label);
        await assert.rejects(key.peek(v, sealed, -1, 1), /non-negative integer/, label);
      } finally {
        key.destroy();
      }
    }
  });

  it('refuses gathered input to open, a segment that is not bytes, and an output overlapping a segment', async function () {
    const k = Buffer.alloc(32, 4);
    const buf = Buffer.alloc(200);
    for (const { label, backend } of backends) {
      await assert.rejects(
        backend.openBatch(k, [{ iv: Buffer.alloc(12), aad: Buffer.alloc(0), input: [Buffer.alloc(40)] }]),
        TypeError,
        label,
      );
      await assert.rejects(
        backend.sealBatch(k, [{ iv: Buffer.alloc(12), aad: Buffer.alloc(0), input: [Buffer.alloc(4), 'text' as unknown as Uint8Array] }]),
        TypeError,
        label,
      );
      await assert.rejects(
        backend.sealBatch(k, [
          {
            iv: Buffer.alloc(12),
            aad: Buffer.alloc(0),
            input: [buf.subarray(0, 10), buf.subarray(100, 150)],
            output: buf.subarray(120, 196),
          },
        ]),
        /overlaps a segment/,
        label,
      );
    }
  });

  it('works on unaligned views and SharedArrayBuffer memory', async function () {
    const k = Buffer.alloc(32, 7);
    const shared = new Uint8Array(new SharedArrayBuffer(70_000));
    for (let i = 0; i < shared.length; i++) shared[i] = (i * 31) & 0xff;
    const input = shared.subarray(3, 3 + 65_537);
    const ivv = new Uint8Array(shared.buffer, 1, 12);
    const aadv = new Uint8Array(shared.buffer, 5, 21);
    const expected = hex(await backends[0]!.backend.seal(k, Buffer.from(ivv), Buffer.from(aadv), Buffer.from(input)));
    for (const { label, backend } of backends) {
      assert.equal(hex(await backend.seal(k, ivv, aadv, input)), expected, label);
    }
  });

  it('large messages (3 MiB, through the thread pool) agree across backends', async function () {
    const k = Buffer.alloc(32, 9);
    const big = Buffer.alloc(3 * 1024 * 1024 + 5);
    for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff;
    const ivv = Buffer.alloc(12, 1);
    const outs = await Promise.all(backends.map(({ backend }) => backend.seal(k, ivv, Buffer.alloc(3), big)));
    for (let i = 1; i < outs.length; i++) assert.ok(Buffer.from(outs[i]!).equals(outs[0]!), backends[i]!.label);
    for (const { label, backend } of backends) {
      const opened = await backend.open(k, ivv, Buffer.alloc(3), outs[0]!);
      assert.ok(Buffer.from(opened).equals(big), label);
    }
  });
});
