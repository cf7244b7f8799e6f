/**
 * `ferry bench engine` as a user runs it (needs `npm run build`, which `npm test` does): a tiny
 * guest moved over a long link, `--rtt`, through the user-space WAN emulator. Speeds are not
 * asserted; outcomes, the measured round trip and the JSON are.
 */
import assert from 'node:assert/strict';
import { ferryAsync } from '../support/cli.js';
import { processesMentioning } from '../support/processes.js';

const bench = (args: string[]) => ferryAsync(['bench', 'engine', ...args]);

describe('ferry bench engine', function () {
  it('moves a kv guest over a 100 ms link (--rtt), encrypted and plain, and reports the round trip it measured', async function () {
    const r = await bench([
      '--memory',
      '16MiB',
      '--workload',
      'kv:get=1000,set=200',
      '--rtt',
      '100ms',
      '--bandwidth',
      '200Mbit',
      '--runs',
      '1',
      '--json',
    ]);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const runs = lines.filter((l) => l.type === 'run');
    assert.deepEqual(
      runs.map((x) => [x.mode, x.outcome]),
      [
        ['encrypted', 'committed'],
        ['plain', 'committed'],
      ],
    );
    for (const x of runs) assert.ok(x.roundTripMs >= 100, `round trip ${x.roundTripMs} ms over a 100 ms link`);
    const result = lines.find((l) => l.type === 'result');
    assert.equal(result.rttMs, 100);
    assert.deepEqual(processesMentioning('ferry-bench-engine-'), []);
  });

  it('refuses a round trip it cannot emulate, with a usage error', async function () {
    const r = await bench(['--rtt', '0ms']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--rtt must be more than 0 and at most 10s/);
  });
});
