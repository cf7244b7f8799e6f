/**
 * The frame decoder against 100 000+ random and mutated inputs (fast-check), fed in random chunks:
 * it never crashes or hangs, allocates at most one maximum frame, and every failure is a typed
 * ERR_FERRY_FRAME. Valid frames still decode after the fuzzing of their neighbours.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FerryError } from '../../src/errors.js';
import { FrameDecoder, type RawFrame } from '../../src/channel/decoder.js';
import { FrameReader } from '../../src/channel/reader.js';
import {
  Flag,
  FrameType,
  HEADER_BYTES,
  MAX_ABORT_BYTES,
  MAX_HELLO_BYTES,
  MAX_PAYLOAD_BYTES,
  TAG_BYTES,
  frameBytes,
  writeHeader,
} from '../../src/channel/wire.js';

const MAX_FRAME = HEADER_BYTES + MAX_PAYLOAD_BYTES + TAG_BYTES + 64;

/** A well-formed frame (its tag is not checked here: the decoder has no key). */
const validFrame = fc
  .record({
    type: fc.constantFrom(FrameType.HELLO, FrameType.DATA, FrameType.ACK, FrameType.END, FrameType.ABORT),
    encrypted: fc.boolean(),
    connectionId: fc.integer({ min: 1, max: 0xffff_ffff }),
    sequence: fc.integer({ min: 0, max: 2 ** 40 }),
    messageNumber: fc.integer({ min: 0, max: 2 ** 40 }),
    messageType: fc.integer({ min: 0, max: 255 }),
    size: fc.integer({ min: 0, max: 600 }),
    id: fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/),
  })
  .map((r) => {
    const payloadLength =
      r.type === FrameType.HELLO
        ? 8
        : r.type === FrameType.DATA
          ? r.size
          : r.type === FrameType.ABORT
            ? Math.min(r.size, MAX_ABORT_BYTES)
            : 0;
    const migrationId = r.type === FrameType.HELLO ? r.id : undefined;
    const total = HEADER_BYTES + (migrationId?.length ?? 0) + payloadLength + (r.encrypted ? TAG_BYTES : 0);
    const buf = Buffer.alloc(total, 0xa5);
    writeHeader(buf, {
      type: r.type,
      flags: r.encrypted ? Flag.ENCRYPTED : 0,
      messageType: r.type === FrameType.DATA ? r.messageType : 0,
      connectionId: (r.connectionId & 0x7fff_ffff) === 0 ? 1 : r.connectionId,
      sequence: r.sequence,
      messageNumber: r.messageNumber,
      payloadLength,
      migrationId,
    });
    return buf;
  });

const mutation = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 40 }) }),
);

function mutate(buf: Buffer, ms: { kind: string; at: number; bit?: number; value?: number; bytes?: Uint8Array }[]): Buffer {
  let b = Buffer.from(buf);
  for (const m of ms) {
    if (b.length === 0) break;
    const at = m.at % b.length;
    if (m.kind === 'flip') b[at]! ^= 1 << m.bit!;
    else if (m.kind === 'set') b[at] = m.value!;
    else if (m.kind === 'truncate') b = b.subarray(0, at);
    else b = Buffer.concat([b.subarray(0, at), m.bytes!, b.subarray(at)]);
  }
  return b;
}

/** Feeds `input` in the given chunk sizes; returns the frames or the typed error. */
function decode(input: Buffer, cuts: number[]): { frames: RawFrame[]; error: FerryError | null } {
  const decoder = new FrameDecoder();
  const frames: RawFrame[] = [];
  let off = 0;
  let i = 0;
  try {
    while (off < input.length) {
      const n = Math.max(1, cuts.length ? cuts[i++ % cuts.length]! : input.length);
      decoder.push(input.subarray(off, off + n), frames);
      off += n;
    }
  } catch (err) {
    if (!(err instanceof FerryError) || err.code !== 'ERR_FERRY_FRAME') throw new Error(`untyped failure: ${String(err)}`, { cause: err });
    assert.throws(
      () => decoder.push(Buffer.alloc(1), []),
      (e: FerryError) => e === err,
      'the decoder stays failed',
    );
    return { frames, error: err };
  }
  for (const f of frames) {
    assert.ok(f.wireBytes <= MAX_FRAME, 'no frame beyond the maximum');
    assert.equal(f.wireBytes, frameBytes(f.header));
  }
  assert.ok(decoder.bufferedBytes <= MAX_FRAME + input.length);
  return { frames, error: null };
}

describe('frame decoder fuzzing (fast-check)', function () {
  this.timeout(120_000);
  const cuts = fc.array(fc.integer({ min: 1, max: 300 }), { maxLength: 8 });

  it('decodes valid frames in any chunking, each exactly', () => {
    fc.assert(
      fc.property(fc.array(validFrame, { minLength: 1, maxLength: 6 }), cuts, (frames, c) => {
        const { frames: out, error } = decode(Buffer.concat(frames), c);
        assert.equal(error, null);
        assert.equal(out.length, frames.length);
        out.forEach((f, i) => assert.ok(Buffer.concat([f.aad, f.body]).equals(frames[i]!)));
      }),
      { numRuns: 10_000 },
    );
  });

  it('40 000 mutated frames: a typed error or frames within bounds, never a crash', () => {
    fc.assert(
      fc.property(
        fc.array(validFrame, { minLength: 1, maxLength: 3 }),
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        cuts,
        (frames, ms, c) => {
          decode(mutate(Buffer.concat(frames), ms), c);
        },
      ),
      { numRuns: 40_000 },
    );
  });

  it('50 000 random byte strings: a typed error or nothing, never a crash', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 0, max: 6 }), cuts, (bytes, type, c) => {
        // Most runs get a plausible version and type, so the random bytes reach the deeper checks.
        const b = Buffer.from(bytes);
        if (type > 0 && b.length >= 2) {
          b[0] = 1;
          b[1] = type;
        }
        decode(b, c);
      }),
      { numRuns: 50_000 },
    );
  });

  it('headers that announce huge payloads are refused before any allocation', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: MAX_PAYLOAD_BYTES + 1, max: 0xffff_ffff }),
        fc.constantFrom(...Object.values(FrameType)),
        (len, type) => {
          const h = Buffer.alloc(HEADER_BYTES);
          writeHeader(h, { type, flags: 0, connectionId: 1, sequence: 0, messageNumber: 0, payloadLength: 0, migrationId: undefined });
          h.writeUInt32BE(len, 24);
          const { error } = decode(h, []);
          assert.equal(error?.code, 'ERR_FERRY_FRAME');
        },
      ),
      { numRuns: 2_000 },
    );
    assert.ok(MAX_HELLO_BYTES < 200);
  });
});

/**
 * The socket read path (FrameReader: reads land in buffers it chooses) against the decoder: on every
 * input, fed in any chunking both as pushed chunks and as socket reads of any size, it yields the
 * same frames or the same typed refusal, and stays failed after one.
 */
function readAll(input: Buffer, cuts: number[], socketLike: boolean, target: boolean): { frames: RawFrame[]; error: FerryError | null } {
  const reader = new FrameReader(undefined, target ? (h, n) => (h.type === FrameType.DATA ? new Uint8Array(n) : null) : undefined);
  const frames: RawFrame[] = [];
  let off = 0;
  let i = 0;
  try {
    while (off < input.length) {
      const want = Math.max(1, cuts.length ? cuts[i++ % cuts.length]! : input.length);
      if (socketLike) {
        // As the kernel does: at most what the reader's buffer holds, at most what has arrived.
        const into = reader.nextBuffer();
        assert.ok(into.length > 0, 'the reader always offers room');
        const n = Math.min(into.length, want, input.length - off);
        input.copy(into, 0, off, off + n);
        off += n;
        reader.read(n, frames);
      } else {
        reader.push(input.subarray(off, off + want), frames);
        off += want;
      }
    }
  } catch (err) {
    if (!(err instanceof FerryError) || err.code !== 'ERR_FERRY_FRAME') throw new Error(`untyped failure: ${String(err)}`, { cause: err });
    assert.throws(
      () => reader.read(1, []),
      (e: FerryError) => e === err,
      'the reader stays failed',
    );
    return { frames, error: err };
  }
  return { frames, error: null };
}

function sameAsDecoder(input: Buffer, cuts: number[], socketLike: boolean, target: boolean): void {
  const want = decode(input, []);
  const got = readAll(input, cuts, socketLike, target);
  assert.equal(got.error?.message, want.error?.message);
  assert.equal(got.frames.length, want.frames.length);
  got.frames.forEach((f, i) => {
    const w = want.frames[i]!;
    assert.deepEqual(f.header, w.header);
    assert.equal(f.wireBytes, w.wireBytes);
    assert.ok(Buffer.concat([f.aad, f.body]).equals(Buffer.concat([w.aad, w.body])));
    if (f.target) assert.ok(Buffer.from(f.target.buffer, f.target.byteOffset, f.target.length).equals(f.body), 'the body is in the target');
  });
}

describe('frame reader (socket reads in place) against the decoder (fast-check)', function () {
  this.timeout(120_000);
  const cuts = fc.array(fc.integer({ min: 1, max: 300 }), { maxLength: 8 });
  const how = fc.record({ socketLike: fc.boolean(), target: fc.boolean() });

  it('valid frames, small and large, in any chunking and read size: the same frames', () => {
    const big = fc.integer({ min: 1, max: 200_000 }).map((n) => {
      const buf = Buffer.alloc(HEADER_BYTES + n, 0x5a);
      writeHeader(buf, {
        type: FrameType.DATA,
        flags: 0,
        messageType: 3,
        connectionId: 7,
        sequence: 1,
        messageNumber: 2,
        payloadLength: n,
        migrationId: undefined,
      });
      return buf;
    });
    const bigCuts = fc.array(fc.integer({ min: 1, max: 100_000 }), { maxLength: 6 });
    fc.assert(
      fc.property(fc.array(fc.oneof(validFrame, big), { minLength: 1, maxLength: 6 }), fc.oneof(cuts, bigCuts), how, (frames, c, h) => {
        sameAsDecoder(Buffer.concat(frames), c, h.socketLike, h.target);
      }),
      { numRuns: 3_000 },
    );
  });

  it('10 000 mutated inputs: the same frames or the same typed error', () => {
    fc.assert(
      fc.property(
        fc.array(validFrame, { minLength: 1, maxLength: 3 }),
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        cuts,
        how,
        (frames, ms, c, h) => {
          sameAsDecoder(mutate(Buffer.concat(frames), ms), c, h.socketLike, h.target);
        },
      ),
      { numRuns: 10_000 },
    );
  });
});
