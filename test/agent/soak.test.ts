/**
 * A guest moved A→B→A twenty times in a row between two real agents: every move commits with
 * matching digests, and neither agent leaks — its open files come back to what they were after the
 * first round trips, and its resident memory settles instead of growing with each migration.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { loadCluster, type Cluster } from '../../src/coordinator/cluster.js';
import { ferryOk } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';
import { migrate } from '../support/migrate.js';
import { sleep } from '../../src/common/async.js';

const ROUND_TRIPS = 20;
/** Round trips before the baseline is taken: lazily opened files, JIT, pools filled once. */
const WARM_UP = 3;

function openFiles(agent: RunningAgent): number {
  return readdirSync(`/proc/${agent.process.pid}/fd`).length;
}

function residentMiB(agent: RunningAgent): number {
  const line = readFileSync(`/proc/${agent.process.pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'))!;
  return Number(line.split(/\s+/)[1]) / 1024;
}

/** Open files come and go with connections being closed; wait (bounded) for them to settle down to `limit`. */
async function settledOpenFiles(agent: RunningAgent, limit: number): Promise<number> {
  let n = openFiles(agent);
  for (let i = 0; i < 40 && n > limit; i++) {
    await sleep(50);
    n = openFiles(agent);
  }
  return n;
}

describe('agent: a guest moved A→B→A twenty times (real agents)', function () {
  let cluster: TestCluster;
  let c: Cluster;
  let a: RunningAgent;
  let b: RunningAgent;

  before(async function () {
    if (process.platform !== 'linux') {
      console.log('      skipped: counts open files and resident memory through /proc (Linux only)');
      this.skip();
    }
    cluster = TestCluster.create();
    await cluster.addHost('a');
    await cluster.addHost('b');
    a = await cluster.startAgent('a');
    b = await cluster.startAgent('b');
    c = await loadCluster(cluster.file);
  });
  after(async function () {
    await cluster?.stop();
  });

  it("commits every move, and the agents' open files and memory do not grow", async function () {
    this.timeout(240_000);
    ferryOk(
      ['vm', 'create', 'pingpong', '--host', 'a', '--memory', '16MiB', '--disk', '1MiB', '--workload', 'kv:get=200,set=100'],
      cluster.env,
    );
    const files: Array<[number, number]> = [];
    const memory: Array<[number, number]> = [];
    let baseline: [number, number] | undefined;
    for (let round = 1; round <= ROUND_TRIPS; round++) {
      for (const [from, to] of [
        ['a', 'b'],
        ['b', 'a'],
      ] as const) {
        const m = await migrate(c, 'pingpong', from, to);
        assert.equal(m.result.outcome, 'committed', `round ${round} ${from}→${to}: ${JSON.stringify(m.result.result?.error)}`);
        assert.equal(m.result.result!.sourceDigest, m.result.result!.destinationDigest, `round ${round} ${from}→${to}`);
      }
      // The guest is back on A: both agents are in the same state after every round trip.
      files.push(
        baseline ? [await settledOpenFiles(a, baseline[0]), await settledOpenFiles(b, baseline[1])] : [openFiles(a), openFiles(b)],
      );
      memory.push([residentMiB(a), residentMiB(b)]);
      if (round === WARM_UP) baseline = files[files.length - 1];
    }
    const report =
      `open files (a, b) per round trip: ${files.map(([x, y]) => `${x}/${y}`).join(' ')}; ` +
      `resident MiB: ${memory.map(([x, y]) => `${x.toFixed(0)}/${y.toFixed(0)}`).join(' ')}`;
    console.log(`      ${report}`);
    const last = files[files.length - 1]!;
    assert.ok(last[0] <= baseline![0] && last[1] <= baseline![1], `open files grew: ${report}`);
    // Memory settles: over the last ten round trips (forty migrations handled by each agent less
    // the warm-up), resident memory grows by less than a few MiB — a leak of even one 1 MiB DATA
    // buffer per migration would add 20 MiB here.
    for (const side of [0, 1] as const) {
      const mid = Math.max(...memory.slice(ROUND_TRIPS / 2 - 2, ROUND_TRIPS / 2 + 1).map((m) => m[side]));
      const end = memory[memory.length - 1]![side];
      assert.ok(end - mid < 12, `agent ${side === 0 ? 'a' : 'b'} memory grew ${(end - mid).toFixed(1)} MiB over the last half: ${report}`);
    }
  });
});
