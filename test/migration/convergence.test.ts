/** The switch-over and throttle rules, on their own. */
import assert from 'node:assert/strict';
import { Convergence, SWITCH_HEADROOM, THROTTLE_INITIAL, THROTTLE_MAX, THROTTLE_STEP } from '../../src/migration/convergence.js';

describe('convergence', () => {
  it('switches over once the remainder crosses within the downtime limit', () => {
    const c = new Convergence(500, true);
    assert.equal(c.fits(1), false, 'no estimate before any measurement');
    assert.ok(c.fits(0));
    c.recordPass(100e6, 1000);
    assert.equal(c.bandwidth, 100e6);
    // 500 ms at 100 MB/s, less the headroom kept for the pause's fixed costs.
    assert.ok(c.fits(50e6 * SWITCH_HEADROOM));
    assert.ok(!c.fits(50e6 * SWITCH_HEADROOM + 1e6));
    // A short pass says little: the estimate stands.
    c.recordPass(1e6, 5);
    assert.equal(c.bandwidth, 100e6);
  });

  it('never estimates more bandwidth than the cap', () => {
    const c = new Convergence(500, true, 10e6);
    c.recordPass(100e6, 1000);
    assert.equal(c.bandwidth, 10e6);
  });

  it('raises the throttle after two overrun passes in a row, in steps, up to the maximum', () => {
    const c = new Convergence(500, true);
    let t = 0;
    t = c.nextThrottle(t, 60, 100);
    assert.equal(t, 0, 'one overrun is not enough');
    t = c.nextThrottle(t, 60, 100);
    assert.equal(t, THROTTLE_INITIAL);
    t = c.nextThrottle(t, 10, 100);
    t = c.nextThrottle(t, 60, 100);
    assert.equal(t, THROTTLE_INITIAL, 'the run of overruns was broken');
    t = c.nextThrottle(t, 60, 100);
    assert.equal(t, THROTTLE_INITIAL + THROTTLE_STEP);
    for (let i = 0; i < 40; i++) t = c.nextThrottle(t, 100, 100);
    assert.equal(t, THROTTLE_MAX);
    const off = new Convergence(500, false);
    off.nextThrottle(0, 100, 1);
    assert.equal(off.nextThrottle(0, 100, 1), 0, "auto-converge off never throttles");
  });
});
