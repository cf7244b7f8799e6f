/**
 * The destination's DATA payload pool: real buffers, filled and checked, handed out, released and
 * handed out again; never one buffer to two holders; bounded; and through a real channel, the
 * payloads a consumer receives land in pooled memory and come back to it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { listenChannel, connectChannel } from '../../src/channel/index.js';
import type { ChannelSpec } from '../../src/channel/types.js';
import type { FerryError } from '../../src/errors.js';
import { MAX_DATA_MESSAGE_BYTES, MSG } from '../../src/migration/messages.js';
import { PayloadPool, dataPayloadPool, receiveInto } from '../../src/migration/payload-pool.js';

const KiB = 1024;

/** Whether two views share any byte of memory. */
function overlap(a: Uint8Array, b: Uint8Array): boolean {
  if (a.buffer !== b.buffer) return false;
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

describe('PayloadPool', function () {
  it('never hands out memory that a holder has not released: held buffers keep their bytes', () => {
    const pool = new PayloadPool(64 * KiB, 8);
    const held: { view: Uint8Array; fill: number }[] = [];
    let fill = 1;
    // Many rounds of take and release in a shuffled order, with some buffers held throughout.
    for (let round = 0; round < 200; round++) {
      const length = 32 * KiB + ((round * 7919) % (32 * KiB)) + 1;
      const view = pool.take(length);
      assert.equal(view.length, length);
      for (const h of held) assert.equal(overlap(view, h.view), false, `round ${round}: a buffer in use was handed out again`);
      view.fill(fill & 0xff);
      held.push({ view, fill: fill++ & 0xff });
      if (held.length > 5) {
        const [gone] = held.splice((round * 31) % held.length, 1);
        pool.release(gone!.view);
      }
      // What a holder wrote is still there: nobody else wrote into its memory.
      for (const h of held)
        assert.ok(
          h.view.every((b) => b === h.fill),
          `round ${round}: a held payload was overwritten`,
        );
    }
    assert.equal(pool.stats.out, held.length);
    assert.ok(pool.stats.reused > 150, `reused ${pool.stats.reused}`);
    assert.ok(pool.stats.allocated <= 6 + 8, `allocated ${pool.stats.allocated}`);
  });

  it('reuses released memory: the next take gets the same buffer', () => {
    const pool = new PayloadPool(4 * KiB, 2);
    const a = pool.take(4 * KiB);
    pool.release(a);
    const b = pool.take(2 * KiB);
    assert.equal(b.length, 2 * KiB);
    assert.equal(b.buffer, a.buffer);
    assert.equal(pool.stats.allocated, 1);
    assert.equal(pool.stats.reused, 1);
  });

  it('refuses a second release of one buffer, and it is handed out once only afterwards', () => {
    const pool = new PayloadPool(4 * KiB, 4);
    const a = pool.take(4 * KiB);
    pool.release(a);
    assert.throws(
      () => pool.release(a),
      (e: FerryError) => e.code === 'ERR_FERRY_INTERNAL' && /twice/.test(e.message),
    );
    // Had the second release been taken, the pool would now hold the buffer twice.
    const x = pool.take(4 * KiB);
    const y = pool.take(4 * KiB);
    assert.notEqual(x.buffer, y.buffer);
    assert.equal(pool.freeCount, 0);
  });

  it('keeps at most maxFree buffers; a buffer not kept is never handed out again, nor released twice', () => {
    const pool = new PayloadPool(4 * KiB, 2);
    const take = () => pool.take(4 * KiB);
    const out = [take(), take(), take(), take()];
    for (const b of out) pool.release(b);
    assert.equal(pool.freeCount, 2);
    assert.throws(
      () => pool.release(out[3]!),
      (e: FerryError) => e.code === 'ERR_FERRY_INTERNAL',
    );
    const again = [take(), take(), take()];
    assert.ok(again[0]!.buffer === out[0]!.buffer || again[0]!.buffer === out[1]!.buffer);
    assert.ok(again[1]!.buffer === out[0]!.buffer || again[1]!.buffer === out[1]!.buffer);
    assert.notEqual(again[0]!.buffer, again[1]!.buffer);
    assert.ok(!out.some((b) => b.buffer === again[2]!.buffer), 'a dropped buffer came back');
  });

  it('serves payloads larger than its buffers, or under half of one, fresh; ignores memory it did not make', () => {
    const pool = new PayloadPool(4 * KiB, 2);
    const big = pool.take(5 * KiB);
    const small = pool.take(2 * KiB - 1);
    assert.equal(big.length, 5 * KiB);
    assert.equal(small.length, 2 * KiB - 1);
    pool.release(big);
    pool.release(small);
    pool.release(Buffer.alloc(10));
    assert.equal(pool.freeCount, 0);
    assert.equal(pool.stats.unpooled, 2);
    assert.equal(pool.stats.allocated, 0);
  });

  it('lets go of its buffers at clear(); one still out is dropped when it comes back', () => {
    const pool = new PayloadPool(4 * KiB, 4);
    const a = pool.take(4 * KiB);
    const b = pool.take(4 * KiB);
    pool.release(a);
    pool.clear();
    assert.equal(pool.freeCount, 0);
    pool.release(b);
    assert.equal(pool.freeCount, 0);
    assert.throws(
      () => pool.release(b),
      (e: FerryError) => e.code === 'ERR_FERRY_INTERNAL',
    );
  });

  it('sizes a migration pool for the largest DATA message and the channel window', () => {
    const pool = dataPayloadPool(64 << 20);
    assert.equal(pool.bufferBytes, MAX_DATA_MESSAGE_BYTES);
    assert.ok(pool.maxFree * MAX_DATA_MESSAGE_BYTES >= 64 << 20 && pool.maxFree <= 100, `maxFree ${pool.maxFree}`);
  });

  for (const mode of ['encrypted', 'plain'] as const) {
    it(`receives a real channel's DATA messages into pooled buffers and gets them back (${mode})`, async function () {
      this.timeout(30_000);
      const spec: ChannelSpec = {
        migrationId: `pool-${mode}`,
        key: randomBytes(32),
        nonce: randomBytes(8),
        mode,
        streams: 2,
        networks: ['127.0.0.1:0'],
      };
      const pool = dataPayloadPool();
      const l = await listenChannel(spec, { allocatePayload: receiveInto(pool) });
      const source = await connectChannel({ ...spec, networks: l.networks });
      // As the source sends them: full messages, and a short one ending each pass (not pooled).
      const sizes = [MAX_DATA_MESSAGE_BYTES, (1 << 20) + 12, (1 << 20) + 24 * 12, 700 * KiB, 12345];
      const sent: Buffer[] = [];
      const sending = (async () => {
        for (let i = 0; i < 200; i++) {
          const m = randomBytes(sizes[i % sizes.length]!);
          sent.push(m);
          await source.send(MSG.DATA, m);
          if (i % 50 === 0) await source.send(MSG.PASS_END, Buffer.from('{"pass":1}'));
        }
        await source.end();
      })();
      let data = 0;
      for (let m = await l.channel.receive(); m; m = await l.channel.receive()) {
        if (m.type !== MSG.DATA) {
          assert.equal(Buffer.from(m.payload).toString(), '{"pass":1}');
          pool.release(m.payload); // not the pool's: ignored
          continue;
        }
        assert.ok(Buffer.from(m.payload).equals(sent[data]!), `message ${data} differs`);
        data++;
        pool.release(m.payload);
      }
      await sending;
      await l.channel.end();
      await l.close();
      source.close();
      assert.equal(data, 200);
      assert.equal(pool.stats.out, 0);
      assert.equal(pool.stats.unpooled, 40);
      assert.equal(pool.stats.allocated + pool.stats.reused, 160);
      // Never more buffers than the window holds payloads of at least half a buffer, plus a batch.
      assert.ok(pool.stats.allocated <= pool.maxFree * 2, `allocated ${pool.stats.allocated}`);
      assert.ok(pool.stats.reused > 0, `reused ${pool.stats.reused}`);
    });
  }
});
