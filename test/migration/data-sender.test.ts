/** A harvested dirty log (ascending page or block indexes) as the runs a pass sends. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { runsOf } from '../../src/migration/data-sender.js';

describe('migration: dirty indexes as runs', function () {
  it('joins consecutive indexes and splits at every gap', function () {
    assert.deepEqual(runsOf(new Uint32Array([])), []);
    assert.deepEqual(runsOf(new Uint32Array([7])), [[7, 1]]);
    assert.deepEqual(runsOf(new Uint32Array([0, 1, 2, 3])), [[0, 4]]);
    assert.deepEqual(runsOf(new Uint32Array([0, 2, 3, 4, 9, 10, 4_294_967_295])), [
      [0, 1],
      [2, 3],
      [9, 2],
      [4_294_967_295, 1],
    ]);
  });

  it('covers every index once, in order, in maximal runs, for any ascending set', function () {
    fc.assert(
      fc.property(fc.uniqueArray(fc.nat(500), { maxLength: 200 }), (set) => {
        const indexes = [...set].sort((a, b) => a - b);
        const runs = runsOf(Uint32Array.from(indexes));
        assert.deepEqual(
          runs.flatMap(([first, count]) => Array.from({ length: count }, (_, i) => first + i)),
          indexes,
        );
        for (let i = 1; i < runs.length; i++) assert.ok(runs[i]![0] > runs[i - 1]![0] + runs[i - 1]![1], 'a gap between any two runs');
      }),
    );
  });
});
