/**
 * JSON lines with secret trailers (src/json-lines.ts), the framing of both control protocols: any
 * chunking gives the same messages, trailers are copied out and wiped in the input, and what
 * cannot be framed is refused with ERR_FERRY_INPUT.
 */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { encodeLine, LineReader, writeWithSecret, type Received } from '../../src/common/json-lines.js';

const limits = { maxLineBytes: 1000, maxSecretBytes: 64 };

/** `input` cut at `cuts` into fresh chunks. */
function chunked(input: Buffer, cuts: number[]): Buffer[] {
  const chunks: Buffer[] = [];
  let at = 0;
  for (const c of cuts) {
    if (at >= input.length) break;
    chunks.push(Buffer.from(input.subarray(at, at + c)));
    at += c;
  }
  if (at < input.length) chunks.push(Buffer.from(input.subarray(at)));
  return chunks;
}

describe('JSON lines with secret trailers', function () {
  it('reads the same messages however the bytes are chunked', function () {
    fc.assert(
      fc.property(
        fc.array(fc.string({ maxLength: 40 }), { maxLength: 8 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { maxLength: 20 }),
        (texts, cuts) => {
          const bytes = Buffer.concat(texts.map((text, id) => encodeLine({ id, text })));
          const reader = new LineReader(limits);
          const got = chunked(bytes, cuts).flatMap((c) => reader.feed(c));
          assert.deepEqual(
            got.map((g) => g.message),
            texts.map((text, id) => ({ id, text })),
          );
        },
      ),
    );
  });

  it('reads secret trailers in any chunking, and wipes the secret from its input', function () {
    const secret = Buffer.alloc(40, 0xab);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }), (cuts) => {
        const input = Buffer.concat([
          encodeLine({ id: 1, method: 'a' }),
          encodeLine({ id: 2, method: 'b', secretBytes: 40 }),
          secret,
          encodeLine({ id: 3 }),
        ]);
        const chunks = chunked(input, cuts);
        const reader = new LineReader(limits);
        const got = chunks.flatMap((c) => reader.feed(c));
        assert.deepEqual(
          got.map((g) => g.message!.id),
          [1, 2, 3],
        );
        assert.ok(got[1]!.secret!.equals(secret));
        assert.equal(got[0]!.secret, null);
        for (const c of chunks) assert.equal(c.indexOf(0xab), -1, 'secret bytes left in an input chunk');
      }),
      { numRuns: 300 },
    );
  });

  it('reports a line that is not a JSON object, and reads on', function () {
    const reader = new LineReader(limits);
    const got = reader.feed(Buffer.from('not json\n[1]\n\n{"id":4}\n'));
    assert.deepEqual(
      got.map((g: Received) => g.error?.code ?? g.message!.id),
      ['ERR_FERRY_INPUT', 'ERR_FERRY_INPUT', 4],
    );
    assert.doesNotMatch(got[0]!.error!.message, /not json/, 'the line itself is not echoed');
  });

  it('refuses an over-long line (also in pieces) and a bad secretBytes, and stays failed', function () {
    const s = new LineReader({ maxLineBytes: 10, maxSecretBytes: 64 });
    assert.deepEqual(
      s.feed(Buffer.from('{"a":"12"}\n')).map((g) => g.message),
      [{ a: '12' }],
    );
    s.feed(Buffer.from('01234'));
    assert.throws(() => s.feed(Buffer.from('567890')), { code: 'ERR_FERRY_INPUT', message: /longer than the limit of 10 bytes/ });
    assert.throws(() => s.feed(Buffer.from('{}\n')), { code: 'ERR_FERRY_INPUT' });
    for (const bytes of [0, 65, 1.5, 'x', null]) {
      assert.throws(() => new LineReader(limits).feed(encodeLine({ id: 1, secretBytes: bytes })), {
        code: 'ERR_FERRY_INPUT',
        message: /secretBytes must be a whole number from 1 to 64/,
      });
    }
  });

  it('takes secretBytes as an ordinary field where trailers are off', function () {
    const got = new LineReader({ maxLineBytes: 100, maxSecretBytes: 0 }).feed(Buffer.from('{"secretBytes":3}\n{"id":1}\n'));
    assert.deepEqual(
      got.map((g) => [g.message, g.secret]),
      [
        [{ secretBytes: 3 }, null],
        [{ id: 1 }, null],
      ],
    );
  });

  it('writes line and trailer in one buffer it zeroes once the stream has taken it; the caller keeps its own', async function () {
    const sink = new PassThrough();
    const written: Buffer[] = [];
    const write = sink.write.bind(sink);
    const taken = new Promise<void>((resolve) => {
      sink.write = ((chunk: Buffer, cb: () => void) => {
        written.push(chunk);
        return write(Buffer.from(chunk), () => {
          cb();
          resolve();
        });
      }) as typeof sink.write;
    });
    const secret = Buffer.alloc(40, 0xcd);
    writeWithSecret(sink, { id: 7, method: 'm' }, secret);
    const got = new LineReader(limits).feed(sink.read() as Buffer);
    assert.deepEqual(got[0]!.message, { id: 7, method: 'm', secretBytes: 40 });
    assert.ok(got[0]!.secret!.equals(secret));
    await taken;
    assert.ok(
      written[0]!.every((b) => b === 0),
      'the written buffer is zeroed after the write',
    );
    assert.ok(secret.equals(Buffer.alloc(40, 0xcd)), "the caller's secret is the caller's to wipe");
  });
});
