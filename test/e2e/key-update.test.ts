/**
 * Key update end to end: real agents and guest processes, with the per-epoch key budget lowered to
 * 16 MiB through FERRY_TEST_KEY_BUDGET_BYTES (which can only lower it), so a 1 GiB guest crosses
 * 30+ key epochs; `--verify` compares the memory on both sides. Then the same with the first
 * migration network cut in the middle of the move.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { KEY_BUDGET_ENV } from '../../src/channel/options.js';
import { attachGuest } from '../../src/guest/index.js';
import type { MigrationResult } from '../../src/migration/types.js';
import { sleep } from '../../src/common/async.js';
import { ferryOk, startFerry } from '../support/cli.js';
import { TestCluster } from '../support/cluster.js';
import { relayFirstNetwork } from '../support/relay.js';
import { jsonLines } from '../support/json-output.js';
import { waitUntil } from '../support/wait.js';

const MiB = 1024 * 1024;
/**
 * The kv store writes about half of the 1 GiB (the rest are zero pages, which cross as markers):
 * about 540 MB sealed, 30+ epochs at 16 MiB.
 */
const BUDGET = 16 * MiB;

describe('e2e: key update inside a migration', function () {
  this.timeout(600_000);
  let cluster: TestCluster;

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a', { networks: 2 });
    await cluster.addHost('b', { networks: 2 });
    // The agents (and the guest processes they start) take it from their environment.
    const saved = process.env[KEY_BUDGET_ENV];
    process.env[KEY_BUDGET_ENV] = String(BUDGET);
    try {
      await cluster.startAgent('a');
      await cluster.startAgent('b');
    } finally {
      if (saved === undefined) delete process.env[KEY_BUDGET_ENV];
      else process.env[KEY_BUDGET_ENV] = saved;
    }
  });
  after(async function () {
    await cluster?.stop();
  });

  /** The destination guest process's own result of its last migration (the channel's figures in it). */
  async function arrivalResult(host: string, vm: string): Promise<MigrationResult> {
    const guest = await attachGuest(path.join(cluster.hostDir(host), 'guests', vm));
    assert.ok(guest, `no guest process ${vm} on ${host}`);
    try {
      for (let i = 0; i < 200; i++) {
        const info = await guest.migration();
        if (info?.result) return info.result;
        await sleep(50);
      }
    } finally {
      guest.close();
    }
    throw new Error(`no migration result for ${vm} on ${host}`);
  }

  /** `ferry migrate VM --to TO --verify --json ...extra`, calling `onEvent` on each event; its events and exit status. */
  async function migrate(vm: string, to: string, extra: string[] = [], onEvent: (e: Record<string, unknown>) => void = () => {}) {
    const child = startFerry(['migrate', vm, '--to', to, '--verify', '--json', ...extra], cluster.env);
    const events: Record<string, unknown>[] = [];
    for await (const line of createInterface({ input: child.process.stdout })) {
      const e = JSON.parse(line) as Record<string, unknown>;
      events.push(e);
      onEvent(e);
    }
    const { status, stderr } = await child.ended;
    return { events, result: events.at(-1)!, status, stderr };
  }

  /**
   * A guest of 1 GiB whose memory is written (zero pages would cross as markers, not bytes): the kv
   * workload fills a store over all of it (half the slots of a table spread over every page) before
   * its first operation, then dirties little while it moves.
   */
  async function writtenGuest(name: string): Promise<void> {
    ferryOk(['vm', 'create', name, '--host', 'a', '--memory', '1GiB', '--workload', 'kv:get=1000,set=100'], cluster.env);
    await waitUntil(
      () => jsonLines(ferryOk(['vm', 'list', '--json'], cluster.env).stdout).some((g) => g.name === name && g.opsPerSecond > 0),
      120_000,
      `${name}'s store filled`,
    );
  }

  it('a 1 GiB guest moves with --verify across 30+ key epochs of 16 MiB', async function () {
    await writtenGuest('k1');
    const { result, status, stderr } = await migrate('k1', 'b');
    assert.equal(status, 0, stderr);
    assert.equal(result.ok, true, JSON.stringify(result));
    assert.equal(result.mode, 'encrypted');
    assert.equal(result.verified, true);
    const arrival = await arrivalResult('b', 'k1');
    // The budget is per epoch: 30 of them, at least, each its own key.
    assert.ok(arrival.keyEpochs!.received >= 30, `the source reached key epoch ${arrival.keyEpochs!.received}`);
    assert.ok(arrival.keyEpochs!.received >= Math.floor(arrival.wireBytes!.received / BUDGET) - 1, 'no epoch sealed past its budget');
    ferryOk(['vm', 'destroy', 'k1'], cluster.env);
  });

  it('the first migration network is cut in the middle of the move: it fails over, rekeying all along, and verifies', async function () {
    const { relay, second, restore } = await relayFirstNetwork(cluster.file, 'b');
    try {
      await writtenGuest('k2');
      // At 100 MB/s the first pass takes several seconds, with a 'pass' event each second: the cut falls inside it.
      let cut: Record<string, unknown> | null = null;
      const { events, result, status, stderr } = await migrate('k2', 'b', ['--bandwidth', '100MB'], (e) => {
        if (cut === null && e.type === 'pass' && e.side === 'source' && (e.bytesSent as number) >= 64 * MiB) {
          cut = e;
          relay.partitioned = true;
          relay.cut();
        }
      });
      assert.equal(status, 0, stderr);
      const at = cut as Record<string, unknown> | null;
      assert.ok(at && at.pass === 1 && (at.bytesLeft as number) > 0, `cut in the middle of the first pass: ${JSON.stringify(at)}`);
      assert.equal(result.ok, true, JSON.stringify(result));
      assert.equal(result.verified, true);
      assert.ok(relay.cuts >= 1 && relay.accepted >= 1, 'the first network carried the move until it was cut');
      // Said as it happened and in the result: from which network to which, and what went again.
      const failover = events.find((e) => e.type === 'failover' && e.side === 'source');
      assert.ok(failover, `a failover event: ${events.map((e) => e.type).join(' ')}`);
      assert.equal(failover.to, second);
      const failovers = result.failovers as { from: string; to: string; bytesResent: number }[];
      assert.ok(failovers.length >= 1 && failovers[0]!.to === second, JSON.stringify(failovers));
      assert.equal(failovers[0]!.from, failover.from);
      assert.ok(failovers[0]!.bytesResent >= 0);
      assert.match(stderr, /migration network .* lost; carrying on over/);
      // Progress counts what arrived: never the send window's worth above the 100 MB/s cap.
      const rates = events.filter((e) => e.type === 'pass' && e.side === 'source').map((e) => e.throughput as number);
      assert.ok(
        rates.length >= 2 && Math.max(...rates) <= 1.25 * 100e6,
        `pass rates ${rates.map((r) => (r / 1e6).toFixed(0)).join(' ')} MB/s`,
      );
      const arrival = await arrivalResult('b', 'k2');
      assert.ok(arrival.keyEpochs!.received >= 30, `the source reached key epoch ${arrival.keyEpochs!.received}`);
    } finally {
      restore();
    }
  });
});
