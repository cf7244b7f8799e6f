/**
 * BatchOptions.threads and onThreads on every backend: a batch never runs on more threads than it
 * is given, says how many it ran on (native: the addon's own count of pool workers), and gives the
 * same bytes whatever the thread count. This is what the host's crypto-thread limit rests on.
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { AeadJob, BatchOptions } from '../../src/crypto/index.js';
import { forEachBackend } from '../support/backends.js';

const FRAME = 256 * 1024;

/** A job whose input is one buffer, so a round trip compares it whole. */
type WholeJob = AeadJob & { input: Uint8Array };

function jobs(count: number, size = FRAME): WholeJob[] {
  return Array.from({ length: count }, (_, i) => ({ iv: Buffer.alloc(12, i), aad: Buffer.from([i]), input: randomBytes(size) }));
}

forEachBackend('crypto: batch thread limits', (backend, name) => {
  const key = randomBytes(32);

  /** Seals and opens `batch` with `threads`; the threads each call reported, and the sealed bytes. */
  async function run(batch: WholeJob[], threads?: number): Promise<{ sealedOn: number[]; openedOn: number[]; sealed: Uint8Array[] }> {
    const sealedOn: number[] = [];
    const openedOn: number[] = [];
    const options = (into: number[]): BatchOptions => ({ ...(threads === undefined ? {} : { threads }), onThreads: (n) => into.push(n) });
    const sealed = await backend().sealBatch(key, batch, options(sealedOn));
    const opened = await backend().openBatch(
      key,
      batch.map((j, i) => ({ ...j, input: sealed[i]! })),
      options(openedOn),
    );
    opened.forEach((o, i) => assert.ok(Buffer.from(o).equals(Buffer.from(batch[i]!.input)), `job ${i} round trip`));
    return { sealedOn, openedOn, sealed };
  }

  it('runs on at most the threads given, says so once per batch, and gives the same bytes', async function () {
    const batch = jobs(8);
    const one = await run(batch, 1);
    assert.deepEqual([one.sealedOn, one.openedOn], [[1], [1]]);
    const three = await run(batch, 3);
    // node:crypto is synchronous: always the calling thread. The others spread as far as allowed.
    const expected = name === 'node' ? 1 : 3;
    assert.deepEqual([three.sealedOn, three.openedOn], [[expected], [expected]]);
    assert.deepEqual(
      three.sealed.map((s) => Buffer.from(s).toString('hex')),
      one.sealed.map((s) => Buffer.from(s).toString('hex')),
    );
    const unlimited = await run(batch);
    const all = name === 'node' ? 1 : name === 'native' ? Math.min(availableParallelism(), batch.length) : batch.length;
    assert.deepEqual(unlimited.sealedOn, [all]);
  });

  // Only the addon runs batches too small for the pool on the calling thread.
  if (name === 'native') {
    it('reports the calling thread for a batch too small for the pool', async function () {
      const { sealedOn } = await run(jobs(4, 1024), 4);
      assert.deepEqual(sealedOn, [1]);
    });
  }

  it('tells nothing of a batch that failed, and refuses bad thread counts', async function () {
    const batch = jobs(2);
    const sealed = await backend().sealBatch(key, batch);
    sealed[1]![0]! ^= 1;
    const told: number[] = [];
    await assert.rejects(
      backend().openBatch(
        key,
        batch.map((j, i) => ({ ...j, input: sealed[i]! })),
        { threads: 2, onThreads: (n) => told.push(n) },
      ),
      {
        code: 'ERR_FERRY_AUTH',
      },
    );
    assert.deepEqual(told, []);
    for (const threads of [0, -1, 1.5, 1025]) {
      await assert.rejects(backend().sealBatch(key, batch, { threads }), RangeError, String(threads));
    }
  });
});
