/**
 * `ferry bench crypto --json` as a user runs it (needs `npm run build`, which `npm test` does): one
 * JSON object on stdout with a figure for every backend, mode and size it claims to measure. Speed
 * goals are not asserted here (the machine is shared); the command reports them as ratios.
 */
import assert from 'node:assert/strict';
import { nativeUnavailableReason } from '../../src/crypto/index.js';
import { ferry } from '../support/cli.js';

describe('ferry bench crypto', function () {
  it('prints one JSON object with every measurement and the ratios', function () {
    this.timeout(120_000);
    const r = ferry(['bench', 'crypto', '--json', '--seconds', '0.01'], {}, { timeoutMs: 110_000 });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1, 'exactly one line on stdout');
    const result = JSON.parse(lines[0]!);
    assert.equal(result.type, 'result');
    assert.equal(result.ok, true);
    const labels = new Set(result.throughput.map((row: { backend: string }) => row.backend));
    for (const label of ['node', 'webcrypto']) assert.ok(labels.has(label), label);
    if (nativeUnavailableReason() === null) assert.ok([...labels].some((l) => String(l).startsWith('native:')));
    for (const row of result.throughput) {
      for (const size of [4096, 65536, 262144, 1048576]) {
        const v = row.gbps[size];
        if (row.backend === 'node' && row.threads === 'all') assert.equal(v, null);
        else assert.ok(typeof v === 'number' && v > 0, `${row.backend} ${row.op} ${row.threads} ${size}: ${v}`);
      }
    }
    assert.ok(result.zeroScan.typescriptAllZeroGBps > 0);
    if (result.openssl.gbps) assert.ok(result.openssl.gbps[65536] > 0);
    else assert.match(result.openssl.reason, /openssl/);
    assert.ok(Object.keys(result.ratios).length >= 5);
  });

  it('refuses a bad --seconds with exit status 2', function () {
    const r = ferry(['bench', 'crypto', '--seconds', '-1']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--seconds/);
  });
});
