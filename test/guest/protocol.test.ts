/** The guest control protocol's framing: the shared reader (test/json-lines.test.ts) with the guest's limits. */
import assert from 'node:assert/strict';
import { FerryError } from '../../src/errors.js';
import { encodeLine, LineReader } from '../../src/common/json-lines.js';
import { GUEST_LINES, MAX_LINE_BYTES, MAX_SECRET_BYTES } from '../../src/guest/protocol.js';

describe('guest control protocol', () => {
  it('reads a request with its key-and-nonce trailer', () => {
    const secret = Buffer.alloc(40, 0xab);
    const input = Buffer.concat([encodeLine({ id: 2, method: 'prepare-incoming', secretBytes: 40 }), secret]);
    const [got] = new LineReader(GUEST_LINES).feed(input);
    assert.equal(got!.message!.method, 'prepare-incoming');
    assert.ok(got!.secret!.equals(secret));
    assert.equal(input.indexOf(0xab), -1, 'wiped in the input');
  });

  it('refuses over-long lines and bad secret sizes with ERR_FERRY_INPUT', () => {
    const input = (b: Buffer) => () => new LineReader(GUEST_LINES).feed(b);
    const isInput = (e: FerryError) => e.code === 'ERR_FERRY_INPUT';
    assert.throws(input(Buffer.alloc(MAX_LINE_BYTES + 2, 0x61)), isInput);
    assert.throws(input(encodeLine({ id: 1, secretBytes: MAX_SECRET_BYTES + 1 })), isInput);
    assert.throws(input(encodeLine({ id: 1, secretBytes: 'x' })), isInput);
  });
});
