/**
 * `ferry migrate --verify` end to end through real agents, for synthetic guests: a kv guest with a
 * disk moved verified by the CLI and back over the control API (the source's result names the
 * scheme and every chunk compared), then moved to a host whose incoming guest processes damage a
 * page as it lands (FERRY_TEST_CORRUPT_PAGE in that agent's environment, which its guest processes
 * inherit; no command sets it): the move fails with a coded error naming the chunk, and the guest
 * runs on at the source only.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { loadCluster } from '../../src/coordinator/cluster.js';
import { CORRUPT_PAGE_ENV } from '../../src/guest/synthetic/test-faults.js';
import { CHUNK_BYTES, VERIFY_ALGORITHM } from '../../src/migration/verify.js';
import { ferry, ferryOk } from '../support/cli.js';
import { TestCluster } from '../support/cluster.js';
import { jsonLines } from '../support/json-output.js';
import { migrate } from '../support/migrate.js';
import { waitUntil } from '../support/wait.js';

const CORRUPT_PAGE = 2000;

describe('e2e: ferry migrate --verify (synthetic guests)', function () {
  this.timeout(120_000);
  let cluster: TestCluster;

  before(async function () {
    cluster = TestCluster.create();
    for (const h of ['a', 'b', 'c']) await cluster.addHost(h);
    await cluster.startAgent('a');
    await cluster.startAgent('b');
    // Only host c's agent, and so only its guest processes, have the fault armed.
    process.env[CORRUPT_PAGE_ENV] = String(CORRUPT_PAGE);
    try {
      await cluster.startAgent('c');
    } finally {
      delete process.env[CORRUPT_PAGE_ENV];
    }
  });
  after(async () => {
    await cluster?.stop();
  });

  const where = (name: string) => jsonLines(ferryOk(['vm', 'list', '--json'], cluster.env).stdout).find((g) => g.name === name);

  it('moves a kv guest with a disk verified, and back: every chunk compared', async () => {
    ferryOk(
      ['vm', 'create', 'v1', '--host', 'a', '--memory', '64MiB', '--disk', '16MiB', '--workload', 'kv:get=2000,set=500'],
      cluster.env,
    );
    await waitUntil(() => where('v1')?.state === 'running', 30_000, 'v1 to run');
    const r = ferry(['migrate', 'v1', '--to', 'b', '--verify', '--json'], cluster.env);
    assert.equal(r.status, 0, r.stderr);
    const result = jsonLines(r.stdout).pop()!;
    assert.equal(result.ok, true, JSON.stringify(result.error));
    assert.equal(result.verified, true);
    assert.equal(where('v1')!.host, 'b');

    const back = await migrate(await loadCluster(cluster.file), 'v1', 'b', 'a');
    assert.equal(back.result.outcome, 'committed', JSON.stringify(back.result.result?.error));
    const v = back.result.result!.verification!;
    assert.equal(v.algorithm, VERIFY_ALGORITHM);
    assert.equal(v.memoryChunks, (64 << 20) / CHUNK_BYTES);
    assert.equal(v.diskChunks, (16 << 20) / CHUNK_BYTES);
    assert.equal(v.chunksCompared, v.memoryChunks + v.diskChunks);
    assert.equal(v.mismatch, null);
    assert.equal(back.result.result!.sourceDigest, back.result.result!.destinationDigest);
  });

  it('refuses to commit a copy with a damaged page: a coded error naming the chunk, the guest running at the source only', async () => {
    const before = where('v1')!;
    assert.equal(before.host, 'a');
    const r = ferry(['migrate', 'v1', '--to', 'c', '--verify', '--json'], cluster.env);
    assert.equal(r.status, 1, r.stdout);
    const result = jsonLines(r.stdout).pop()!;
    assert.equal(result.ok, false);
    assert.equal(result.error.code, 'ERR_FERRY_ABORTED');
    const chunk = Math.floor((CORRUPT_PAGE * 4096) / CHUNK_BYTES);
    assert.match(result.error.message, new RegExp(`verify failed: memory chunk ${chunk} \\(bytes ${chunk * CHUNK_BYTES}-`));
    const after = where('v1')!;
    assert.equal(after.host, 'a');
    assert.equal(after.state, 'running');
    assert.equal(after.pid, before.pid, 'the same guest process runs on');
    await waitUntil(() => !existsSync(path.join(cluster.hostDir('c'), 'guests', 'v1', 'guest.pid')), 15_000, 'c to drop its copy');
    await waitUntil(() => (where('v1')?.opsPerSecond ?? 0) > 0, 10_000, 'the workload to run at the source');
  });
});
