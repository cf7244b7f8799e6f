/**
 * StatusWatch, the wait migrate-out.ts, migrate-in.ts and nbd-mirror.ts use between QEMU's events
 * and their polls: a status announced while nobody waits must end the next wait at once (with the
 * guest paused, a missed wake-up is downtime), and a wait with nothing announced lasts its interval.
 */
import assert from 'node:assert/strict';
import { StatusWatch } from '../../../src/guest/qemu/progress.js';

const elapsed = async (p: Promise<void>): Promise<number> => {
  const t0 = performance.now();
  await p;
  return performance.now() - t0;
};

describe('StatusWatch', function () {
  it('ends the next wait at once when a status came while nobody waited', async function () {
    const w = new StatusWatch();
    w.set('pre-switchover');
    assert.ok((await elapsed(w.changed(2000))) < 500, 'the wait slept past the status it had been told');
    assert.equal(w.value, 'pre-switchover');
  });

  it('ends a wait when a status comes during it, and otherwise after its interval', async function () {
    const w = new StatusWatch();
    setTimeout(() => w.set('completed'), 20);
    assert.ok((await elapsed(w.changed(2000))) < 1000);
    // The status was taken by that wait: the next one lasts its interval.
    assert.ok((await elapsed(w.changed(60))) >= 50);
  });
});
