/** JSON-lines framing: any chunking gives the same lines; an oversized line is refused before it is buffered whole. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LineSplitter } from '../../src/agent/json-lines.js';

describe('agent: JSON-lines framing', function () {
  it('splits the same lines however the bytes are chunked', function () {
    fc.assert(
      fc.property(fc.array(fc.string({ maxLength: 40 }).map((s) => s.replace(/\n/g, ' ')), { maxLength: 8 }), fc.array(fc.nat(50), { maxLength: 20 }), (lines, cuts) => {
        const bytes = Buffer.from(lines.map((l) => `${l}\n`).join(''));
        const splitter = new LineSplitter(1000);
        const out: string[] = [];
        let at = 0;
        for (const cut of cuts) {
          const end = Math.min(bytes.length, at + cut);
          out.push(...splitter.push(bytes.subarray(at, end)));
          at = end;
        }
        out.push(...splitter.push(bytes.subarray(at)));
        assert.deepEqual(out, lines);
      }),
    );
  });

  it('refuses a line over the limit, also when it arrives in pieces', function () {
    const s = new LineSplitter(10);
    assert.deepEqual(s.push(Buffer.from('0123456789\n')), ['0123456789']);
    s.push(Buffer.from('01234'));
    assert.throws(() => s.push(Buffer.from('567890')), { code: 'ERR_FERRY_INPUT', message: /longer than the limit of 10 bytes/ });
    assert.throws(() => new LineSplitter(4).push(Buffer.from('12345\n')), { code: 'ERR_FERRY_INPUT' });
  });
});
