/** Per-host migration slots: never more than the limit at once, first come first served, and says where each waiter stands. */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { SlotQueue } from '../../src/agent/queue.js';

describe('agent: migration slot queue', function () {
  it('runs at most 2 of 6 at once, in arrival order, and all finish', async function () {
    const q = new SlotQueue(2);
    let running = 0;
    let peak = 0;
    const started: number[] = [];
    const positions = new Map<number, number[]>();
    await Promise.all(
      [0, 1, 2, 3, 4, 5].map(async (i) => {
        const release = await q.acquire({ onPosition: (p) => positions.set(i, [...(positions.get(i) ?? []), p]) });
        started.push(i);
        running++;
        peak = Math.max(peak, running);
        await sleep(5 + (i % 3) * 5);
        running--;
        release();
      }),
    );
    assert.equal(peak, 2);
    assert.deepEqual(started, [0, 1, 2, 3, 4, 5]);
    assert.equal(positions.has(0) || positions.has(1), false, 'the first two never wait');
    assert.deepEqual(positions.get(2), [1]);
    assert.deepEqual(positions.get(5), [4, 3, 2, 1]);
    assert.equal(q.running, 0);
    assert.equal(q.queued, 0);
  });

  it('lets a waiter leave the queue when its signal aborts, and moves the others up', async function () {
    const q = new SlotQueue(1);
    const hold = await q.acquire();
    const controller = new AbortController();
    const leaving = q.acquire({ signal: controller.signal });
    const seen: number[] = [];
    const staying = q.acquire({ onPosition: (p) => seen.push(p) });
    controller.abort(new Error('gone'));
    await assert.rejects(leaving, /gone/);
    assert.deepEqual(seen, [2, 1]);
    hold();
    const release = await staying;
    assert.equal(q.running, 1);
    release();
    release(); // twice: must not free a slot it does not hold
    assert.equal(q.running, 0);
  });

  it('counts a slot occupied past the limit (an adopted migration), and starts no waiter until the count is under it again', async function () {
    const q = new SlotQueue(1);
    const first = await q.acquire();
    const adopted = q.occupy();
    assert.equal(q.running, 2);
    let started = false;
    const waiting = q.acquire().then((release) => {
      started = true;
      return release;
    });
    first();
    await new Promise((r) => setImmediate(r));
    assert.equal(started, false, 'the adopted migration alone fills the limit');
    assert.equal(q.running, 1);
    adopted();
    (await waiting)();
    assert.equal(started, true);
    assert.equal(q.running, 0);
  });

  it('refuses a limit below 1', function () {
    assert.throws(() => new SlotQueue(0), { code: 'ERR_FERRY_INPUT' });
  });
});
