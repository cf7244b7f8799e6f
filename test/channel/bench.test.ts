/**
 * `ferry bench channel --json` as scripts use it: one JSON object with rows in the documented shape.
 * A smoke run (--quick, a few MiB); throughput itself is never asserted here.
 */
import assert from 'node:assert/strict';
import { ferryAsync } from '../support/cli.js';

describe('ferry bench channel', function () {
  this.timeout(120_000);
  it('--json prints one object: rows {mode, streams, rttMs, capGbps, gbPerSec, CPU s/GB per side} and peers', async () => {
    const r = await ferryAsync(['bench', 'channel', '--quick', '--json', '--size', '8MiB', '--wan-size', '4MiB']);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1, 'nothing but the result on stdout');
    const result = JSON.parse(lines[0]!) as { rows: Record<string, unknown>[]; peers: { iperf3GbPerSec: number | null } };
    assert.equal(result.rows.length, 3);
    for (const row of result.rows) {
      assert.equal(row.error, undefined, JSON.stringify(row.error));
      for (const k of ['streams', 'rttMs', 'gbPerSec', 'senderCpuSecPerGB', 'receiverCpuSecPerGB'])
        assert.equal(typeof row[k], 'number', k);
      assert.ok(row.mode === 'encrypted' || row.mode === 'plain');
      assert.ok((row.gbPerSec as number) > 0);
      assert.ok((row.senderCpuSecPerGB as number) > 0 && (row.receiverCpuSecPerGB as number) > 0, 'each side measured its own CPU');
    }
    assert.ok('iperf3GbPerSec' in result.peers);
  });

  it('a bad size is a usage error (exit 2)', async () => {
    const { status } = await ferryAsync(['bench', 'channel', '--size', 'lots']);
    assert.equal(status, 2);
  });
});
