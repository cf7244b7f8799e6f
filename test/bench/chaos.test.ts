/**
 * `ferry bench chaos` as a user runs it (needs `npm run build`, which `npm test` does): a small
 * guest, a few faulted rounds through real agents and `ferry migrate` processes. Which faults a
 * seed draws is the generator's; the test checks the result's shape and the checks' verdict.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { ferry, ferryAsync } from '../support/cli.js';
import { jsonLines } from '../support/json-output.js';
import { processesMentioning } from '../support/processes.js';
import { FAULTS, soak } from '../../src/bench/chaos.js';

describe('ferry bench chaos', function () {
  this.timeout(5 * 60_000);

  it('runs faulted rounds, checks each for one running guest and nothing left, and removes everything', async function () {
    const before = new Set(processesMentioning(`${tmpdir()}/ferry-demo-`));
    const r = await ferryAsync([
      'bench',
      'chaos',
      '--rounds',
      '3',
      '--seed',
      '11',
      '--memory',
      '64MiB',
      '--bandwidth',
      '100Mbit',
      '--json',
    ]);
    const result = jsonLines(r.stdout).find((l) => l.type === 'result');
    assert.ok(result, `${r.stdout}${r.stderr}`);
    assert.equal(result.subject, 'chaos');
    assert.equal(result.seed, 11);
    assert.equal(result.rounds.length, 3, JSON.stringify(result.rounds, null, 1));
    for (const round of result.rounds) {
      assert.ok((FAULTS as readonly string[]).includes(round.fault), round.fault);
      assert.equal(round.clean, round.problems.length === 0);
      assert.ok(round.host === 'a' || round.host === 'b' || !round.clean, JSON.stringify(round));
    }
    assert.equal(result.ok, result.figures.clean === 3);
    assert.equal(r.status, result.ok ? 0 : 1, r.stderr);
    assert.ok(result.ok, `not every round clean: ${JSON.stringify(result.rounds, null, 1)}`);
    console.log(`      ${result.figures.clean} of 3 clean; faults ${result.rounds.map((x: { fault: string }) => x.fault).join(', ')}`);
    assert.deepEqual(
      processesMentioning(`${tmpdir()}/ferry-demo-`).filter((p) => !before.has(p)),
      [],
      'no agent or guest process left',
    );
  });

  it('refuses a bad --rounds or --fault-every with a usage error', function () {
    const r = ferry(['bench', 'chaos', '--rounds', '0']);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--rounds: a whole number from 1 to 10000 \[ERR_FERRY_USAGE\]/);
    const e = ferry(['bench', 'chaos', '--fault-every', '1.5']);
    assert.equal(e.status, 2, e.stderr);
    assert.match(e.stderr, /--fault-every: a whole number from 1 to 10000 \[ERR_FERRY_USAGE\]/);
  });

  it('reads the soak from the longest-lived agent of each host', function () {
    const s = (pid: number, openFiles: number) => ({ pid, openFiles, rssBytes: 64 * 2 ** 20 });
    const out = soak([
      { a: s(1, 20), b: s(9, 30) },
      { a: s(1, 21), b: null },
      { a: s(1, 22), b: s(10, 25) },
    ]);
    assert.deepEqual(out.a, { pid: 1, rounds: 3, openFiles: [20, 22], rssMiB: [64, 64], peak: { openFiles: 22, rssMiB: 64 } });
    assert.equal(out.b!.rounds, 1);
  });
});
