/**
 * `ferry bench qemu-digests` as a user runs it (needs `npm run build`, which `npm test` does): one
 * move of ferry's test guest by QEMU alone, real QEMUs, both copies' RAM digests compared. Whether
 * they agree is QEMU's business and not asserted; that the move ran, was compared, and that a
 * difference names its pages, is. Skipped, saying why, without QEMU.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { qemuBinaries } from '../../src/bench/qemu.js';
import { processesMentioning } from '../support/processes.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const ferry = (args: string[], timeout = 60_000) =>
  spawnSync(process.execPath, ['bin/ferry', 'bench', 'qemu-digests', ...args], { cwd: root, encoding: 'utf8', timeout });

describe('ferry bench qemu-digests', function () {
  it('refuses bad flags before it starts anything', function () {
    for (const [args, message] of [
      [['--rounds', '0'], /--rounds must be 1 to 20/],
      [['--bandwidth', '10kB'], /--bandwidth must be at least 1MB/],
      [['--bandwidth', 'fast'], /--bandwidth/],
    ] as const) {
      const r = ferry([...args]);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /round 1/, 'nothing was started');
    }
  });

  it("moves the guest once by QEMU alone and compares both paused copies' RAM, naming the pages that differ", function () {
    const { binaries, missing } = qemuBinaries(undefined);
    if (missing) {
      console.log(`      skipped: ${missing}`);
      this.skip();
    }
    this.timeout(300_000);
    const r = ferry(['--rounds', '1', '--bandwidth', '1GB', '--qemu', binaries[0]!, '--json'], 290_000);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1, 'exactly one line on stdout');
    const result = JSON.parse(lines[0]!);
    assert.equal(result.subject, 'qemu-digests');
    assert.equal(result.qemus.length, 1);
    const [q] = result.qemus;
    assert.equal(q.skipped, null);
    assert.equal(q.rounds.length, 1);
    const [round] = q.rounds;
    assert.equal(round.ok, true, round.error);
    assert.equal(typeof round.equal, 'boolean');
    assert.ok(round.ramBytes > 0);
    assert.equal(q.equal + q.differ, 1);
    if (round.equal) assert.equal(round.differingPages, null);
    else {
      assert.ok(round.differingPages.count > 0);
      for (const page of round.differingPages.first) assert.match(page, /^0x[0-9a-f]+000$/);
    }
    console.log(`      ${q.version}: digests ${round.equal ? 'equal' : `differ in ${round.differingPages.count} pages`}`);
    assert.deepEqual(processesMentioning('ferry-bench-qemu-digests-'), [], 'no QEMU left behind');
  });
});
