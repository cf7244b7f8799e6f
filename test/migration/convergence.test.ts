/** The switch-over and throttle rules, on their own. */
import assert from 'node:assert/strict';
import {
  Convergence,
  DIRTY_SHARE_BEFORE_MEASURED,
  SWITCH_HEADROOM,
  THROTTLE_INITIAL,
  THROTTLE_MAX,
  THROTTLE_STEP,
} from '../../src/migration/convergence.js';

describe('convergence', () => {
  it('switches over once the remainder crosses within the downtime limit, at the rate dirty pages went', () => {
    const c = new Convergence(500, true);
    assert.equal(c.fits(1), false, 'no estimate before any measurement');
    assert.ok(c.fits(0));
    c.recordPass(100e6, 1000);
    assert.equal(c.bandwidth, 100e6);
    // After pass 1 alone, dirty pages are assumed to cross at a share of its rate: 500 ms at
    // 50 MB/s, less the headroom kept for the pause's fixed costs.
    const share = 100e6 * DIRTY_SHARE_BEFORE_MEASURED;
    assert.ok(c.fits(0.5 * share * SWITCH_HEADROOM));
    assert.ok(!c.fits(0.5 * share * SWITCH_HEADROOM + 1e6));
    assert.equal(c.estimateMs(share), 1000);
    // A pass of dirty pages measured: its rate decides, whatever pass 1 did.
    c.recordPass(30e6, 1000, true);
    assert.equal(c.dirtyPassBandwidth, 30e6);
    assert.equal(c.estimateMs(30e6), 1000);
    assert.ok(c.fits(15e6 * SWITCH_HEADROOM));
    assert.ok(!c.fits(15e6 * SWITCH_HEADROOM + 1e6));
    // A short pass says little of the link (its bandwidth stands) but is what the next short pass takes.
    c.recordPass(1e6, 5, true);
    assert.equal(c.bandwidth, 0.5 * 100e6 + 0.5 * 30e6);
    assert.equal(c.dirtyPassBandwidth, 0.5 * 30e6 + 0.5 * 200e6);
  });

  it('converges on a guest that dirties a page now and then after a pass 1 that sent almost nothing', () => {
    // A fresh guest: pass 1 skips every zero page and sends a few KiB in a second.
    const c = new Convergence(500, true);
    c.recordPass(12_000, 1000);
    assert.ok(!c.fits(4096), 'a page at half of 12 kB/s: 680 ms');
    // The pass of that one page takes a few ms, acknowledgement included: now it fits.
    c.recordPass(4096, 4, true);
    assert.ok(c.fits(4096));
  });

  it("adds the link's round trip to the pause: a long link leaves less of the limit for the data", () => {
    const near = new Convergence(500, true);
    const far = new Convergence(500, true);
    far.roundTripMs = 150;
    for (const c of [near, far]) c.recordPass(20e6, 1000, true);
    // 350 ms of the 500 go to the pause's data and round trip; at 150 ms RTT that leaves 200 for data.
    const budget = 500 * SWITCH_HEADROOM;
    assert.equal(far.estimateMs(2e6), 100 + 150);
    assert.ok(near.fits(20e6 * (budget / 1000)));
    assert.ok(!far.fits(20e6 * (budget / 1000)));
    assert.ok(far.fits(20e6 * ((budget - 150) / 1000)));
    assert.ok(!far.fits(20e6 * ((budget - 150) / 1000) + 1e5));
    // Nothing left: switch now, the shortest pause there is, however long the link.
    far.roundTripMs = 1000;
    assert.equal(far.estimateMs(0), 0);
    assert.ok(far.fits(0));
  });

  it('keeps the shortest round trip it was given: a stretched first sample does not stay', () => {
    const c = new Convergence(500, true);
    assert.equal(c.roundTripMs, null);
    c.recordPass(20e6, 1000, true);
    c.recordRoundTrip(400);
    assert.ok(!c.fits(4096), '400 ms of a 350 ms share: not even one page');
    assert.equal(c.smallestUsefulLimitMs(), Math.ceil(400 / SWITCH_HEADROOM));
    c.recordRoundTrip(152);
    c.recordRoundTrip(180);
    assert.equal(c.roundTripMs, 152);
    assert.ok(c.fits(4096));
    c.recordRoundTrip(-1);
    assert.equal(c.roundTripMs, 152, 'a negative interval is no sample');
  });

  it('with a round trip longer than the pause may plan for, switches over only with nothing left', () => {
    // 150 ms is less than the 200 ms limit, but more than the 140 ms the pause may plan for.
    const c = new Convergence(200, true);
    c.recordPass(20e6, 1000, true);
    c.recordRoundTrip(150);
    assert.ok(!c.fits(4096), 'not even one page');
    assert.ok(c.fits(0), 'a guest throttled until it dirtied nothing switches over');
    assert.equal(c.smallestUsefulLimitMs(), 215);
    const wider = new Convergence(215, true);
    wider.recordPass(20e6, 1000, true);
    wider.recordRoundTrip(150);
    assert.ok(wider.fits(4096), 'the smallest useful limit has room for a page');
  });

  it('never estimates more bandwidth than the cap', () => {
    const c = new Convergence(500, true, 10e6);
    c.recordPass(100e6, 1000);
    assert.equal(c.bandwidth, 10e6);
    c.recordPass(100e6, 1000, true);
    assert.equal(c.dirtyPassBandwidth, 10e6);
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
    assert.equal(off.nextThrottle(0, 100, 1), 0, 'auto-converge off never throttles');
  });
});
