/** The control protocol's line reader: any chunking, secret trailers copied out and wiped in the input. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FerryError } from '../../src/errors.js';
import { LineReader, MAX_LINE_BYTES, encodeLine } from '../../src/guest/protocol.js';

describe('guest control protocol', () => {
  it('reads lines and secret trailers in any chunking, and wipes the secret from its input', () => {
    const secret = Buffer.alloc(40, 0xab);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }), (cuts) => {
        const input = Buffer.concat([encodeLine({ id: 1, method: 'a' }), encodeLine({ id: 2, method: 'b', secretBytes: 40 }), secret, encodeLine({ id: 3 })]);
        const chunks: Buffer[] = [];
        let at = 0;
        for (const c of cuts) {
          if (at >= input.length) break;
          chunks.push(Buffer.from(input.subarray(at, at + c)));
          at += c;
        }
        if (at < input.length) chunks.push(Buffer.from(input.subarray(at)));
        const reader = new LineReader();
        const got = chunks.flatMap((c) => reader.feed(c));
        assert.deepEqual(got.map((g) => g.message.id), [1, 2, 3]);
        assert.ok(got[1]!.secret!.equals(secret));
        assert.equal(got[0]!.secret, null);
        for (const c of chunks) assert.equal(c.indexOf(0xab), -1, 'secret bytes left in an input chunk');
      }),
      { numRuns: 300 },
    );
  });

  it('refuses over-long lines, bad JSON and bad secret sizes with ERR_FERRY_INPUT', () => {
    const input = (b: Buffer) => () => new LineReader().feed(b);
    const isInput = (e: FerryError) => e.code === 'ERR_FERRY_INPUT';
    assert.throws(input(Buffer.alloc(MAX_LINE_BYTES + 2, 0x61)), isInput);
    assert.throws(input(Buffer.from('{"id":1\n')), isInput);
    assert.throws(input(Buffer.from('[1]\n')), isInput);
    assert.throws(input(encodeLine({ id: 1, secretBytes: 1000 })), isInput);
    assert.throws(input(encodeLine({ id: 1, secretBytes: 'x' })), isInput);
  });
});
