/**
 * The engine's DATA messages: what the builder writes the parser reads back, and any bytes at all
 * either parse into runs inside the guest or fail with ERR_FERRY_FRAME — never anything else.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FerryError } from '../../src/errors.js';
import { DataBuilder, RUN_DATA, RUN_ZERO, SPACE_DISK, decodeData, decodeJson } from '../../src/migration/messages.js';

const units = (): number => 1000;
const size = (): number => 16;

/** The message of a builder whose data runs were all copied in: one buffer, as take() promises. */
function copied(b: DataBuilder): Buffer {
  const message = b.take();
  assert.ok(message instanceof Uint8Array, 'copied runs give one buffer');
  return Buffer.from(message);
}

describe('migration messages', () => {
  it('round-trips runs built by DataBuilder, merging adjacent ones', () => {
    const b = new DataBuilder();
    b.space = SPACE_DISK;
    b.pass = 7;
    b.addZero(0, 3);
    b.addZero(3, 2);
    b.addData(5, 1, Buffer.alloc(16, 1));
    b.addData(6, 2, Buffer.alloc(32, 2));
    b.addZero(999, 1);
    const m = decodeData(copied(b), units, size);
    assert.equal(m.space, SPACE_DISK);
    assert.equal(m.pass, 7);
    assert.deepEqual(m.runs, [
      { first: 0, count: 5, kind: RUN_ZERO },
      { first: 5, count: 3, kind: RUN_DATA },
      { first: 999, count: 1, kind: RUN_ZERO },
    ]);
    assert.deepEqual([...m.data], [...Buffer.alloc(16, 1), ...Buffer.alloc(32, 2)]);
    assert.ok(b.empty);
  });

  it('references guest memory pages where they lie: segments whose concatenation is the same message', () => {
    const memory = new Uint8Array(new SharedArrayBuffer(16 * 10));
    for (let i = 0; i < memory.length; i++) memory[i] = i;
    const byCopy = new DataBuilder();
    const byReference = new DataBuilder();
    for (const b of [byCopy, byReference]) b.pass = 3;
    // Pages 1-2 and 3 are adjacent in memory (one segment); page 7 is not.
    const runs: [number, number][] = [
      [1, 2],
      [3, 1],
      [7, 1],
    ];
    for (const [first, count] of runs) {
      const view = memory.subarray(first * 16, (first + count) * 16);
      byCopy.addData(first, count, view);
      byReference.addPages(first, count, view);
    }
    byCopy.addZero(9, 1);
    byReference.addZero(9, 1);
    assert.equal(byReference.bytes, byCopy.bytes);
    const expectedBytes = byCopy.bytes;
    const whole = copied(byCopy);
    assert.equal(whole.length, expectedBytes);
    const parts = byReference.take();
    assert.ok(Array.isArray(parts), 'referenced pages give segments');
    assert.equal(parts.length, 4, 'header, pages 1-3, page 7, run table');
    assert.equal(parts[1]!.buffer, memory.buffer, 'the pages are the guest memory itself, not a copy');
    assert.ok(Buffer.concat(parts).equals(Buffer.from(whole)));
    const m = decodeData(Buffer.concat(parts), units, size);
    assert.deepEqual(m.runs, [
      { first: 1, count: 3, kind: RUN_DATA },
      { first: 7, count: 1, kind: RUN_DATA },
      { first: 9, count: 1, kind: RUN_ZERO },
    ]);
    assert.deepEqual([...m.data], [...memory.subarray(16, 64), ...memory.subarray(112, 128)]);
    // Reset: the next message is built from scratch.
    assert.ok(byReference.empty);
    byReference.addData(0, 1, Buffer.alloc(16, 9));
    assert.ok(byReference.take() instanceof Uint8Array);
  });

  it('rejects any malformed payload with ERR_FERRY_FRAME only', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          const m = decodeData(bytes, units, size);
          for (const r of m.runs) assert.ok(r.first + r.count <= 1000);
        } catch (err) {
          assert.ok(err instanceof FerryError && err.code === 'ERR_FERRY_FRAME', String(err));
        }
      }),
      { numRuns: 2000 },
    );
    // A run past the end of the guest, and a data length that does not match the runs.
    const b = new DataBuilder();
    b.addZero(995, 10);
    assert.throws(() => decodeData(copied(b), units, size), /outside/);
    b.addData(0, 1, Buffer.alloc(16));
    const short = copied(b);
    assert.throws(() => decodeData(Buffer.concat([short.subarray(0, 8), Buffer.alloc(1), short.subarray(8)]), units, size), /data bytes/);
    assert.throws(() => decodeJson(1, Buffer.from('[1,2]')), /not a JSON object/);
  });
});
