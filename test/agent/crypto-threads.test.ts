/**
 * The per-host crypto-thread budget, end to end: `host init --crypto-threads` stores it, the agent
 * advertises it and `ferry probe` shows it, bad values are refused, and a migration's channel seals
 * and opens on no more than the host's share — as the crypto backend itself reports each batch's
 * threads (the addon's count of pool workers), carried back in the migration result of each side.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadCluster, type Cluster } from '../../src/coordinator/cluster.js';
import type { MigrationResult } from '../../src/migration/types.js';
import { attachGuest } from '../../src/guest/index.js';
import { ferry, ferryOk } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';
import { ask, migrate } from '../support/migrate.js';
import { findSecret } from '../support/secrets.js';
import { sleep } from '../../src/common/async.js';

describe('agent: the crypto-thread budget', function () {
  let cluster: TestCluster;
  let c: Cluster;
  let a: RunningAgent;
  let b: RunningAgent;
  const keys: Buffer[] = [];

  before(async function () {
    cluster = TestCluster.create();
    // a: 1 thread for its 2 + 2 slots (fewer than the slots: 1 each); b: 5 threads for 1 + 1 slots: 2 each.
    await cluster.addHost('a', { cryptoThreads: 1 });
    await cluster.addHost('b', { cryptoThreads: 5, maxOutgoing: 1, maxIncoming: 1 });
    a = await cluster.startAgent('a');
    b = await cluster.startAgent('b');
    c = await loadCluster(cluster.file);
  });
  after(async function () {
    await cluster?.stop();
  });

  it('stores --crypto-threads in host.json; capabilities and probe (--wide table and --json) show it', async function () {
    const hostJson = (h: string) => JSON.parse(readFileSync(path.join(cluster.hostDir(h), 'host.json'), 'utf8'));
    assert.deepEqual(hostJson('a').limits, { outgoing: 2, incoming: 2, cryptoThreads: 1 });
    assert.deepEqual(hostJson('b').limits, { outgoing: 1, incoming: 1, cryptoThreads: 5 });

    const caps = await ask(c, 'b', 'capabilities', {});
    assert.deepEqual(caps.limits, { outgoing: 1, incoming: 1, cryptoThreads: 5 });
    assert.equal(caps.cryptoThreadsPerMigration, 2);

    const json = ferryOk(['probe', '--json'], cluster.env)
      .stdout.trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const probe = (h: string) => json.find((o) => o.type === 'host' && o.host === h);
    assert.deepEqual(probe('a').limits, { outgoing: 2, incoming: 2, cryptoThreads: 1 });
    assert.equal(probe('a').cryptoThreadsPerMigration, 1);
    assert.deepEqual(probe('b').limits, { outgoing: 1, incoming: 1, cryptoThreads: 5 });
    assert.equal(probe('b').cryptoThreadsPerMigration, 2);

    const table = ferryOk(['probe', '--wide'], cluster.env).stdout;
    assert.match(table, /CRYPTO THREADS/);
    assert.match(
      table.split('\n').find((l) => l.startsWith('a '))!,
      /\b1 \(1 per migration\)/,
    );
    assert.match(
      table.split('\n').find((l) => l.startsWith('b '))!,
      /\b5 \(2 per migration\)/,
    );
  });

  it('refuses bad --crypto-threads values with ERR_FERRY_USAGE and exit 2, changing nothing', function () {
    const before = readFileSync(cluster.file, 'utf8');
    const dir = path.join(cluster.root, 'never');
    const base = ['host', 'init', 'c', '--dir', dir, '--control', '127.0.0.1:1', '--network', '127.0.0.1:2', '--json'];
    const cases: [string[], RegExp][] = [
      [['--crypto-threads', '0'], /--crypto-threads: 0 is not a whole number from 1 to 1024/],
      [['--crypto-threads', '-3'], /--crypto-threads: -3 is not a whole number from 1 to 1024/],
      [['--crypto-threads', '1.5'], /--crypto-threads: 1.5 is not a whole number from 1 to 1024/],
      [['--crypto-threads', 'many'], /--crypto-threads: not a whole number from 1 to 1024/],
      [['--crypto-threads', '1025'], /--crypto-threads: 1025 is not a whole number from 1 to 1024/],
      [['--crypto-threads', '1e12'], /--crypto-threads: 1000000000000 is not a whole number/],
      [['--crypto-threads'], /Not enough arguments following: crypto-threads/],
    ];
    for (const [extra, message] of cases) {
      const r = ferry([...base, ...extra], cluster.env);
      assert.equal(r.status, 2, `${extra.join(' ')}: ${r.stderr}`);
      const result = JSON.parse(r.stdout.trim());
      assert.equal(result.ok, false);
      assert.equal(result.error.code, 'ERR_FERRY_USAGE', extra.join(' '));
      assert.match(result.error.message, message);
    }
    assert.equal(readFileSync(cluster.file, 'utf8'), before);
    assert.equal(existsSync(dir), false);

    // A budget below the slots is allowed, with a warning that it cannot be kept strictly.
    const below = ferry(
      ['host', 'init', 'c', '--dir', cluster.hostDir('c'), '--control', '127.0.0.1:1', '--network', '127.0.0.1:2', '--crypto-threads', '3'],
      cluster.env,
    );
    assert.equal(below.status, 0, below.stderr);
    assert.match(below.stderr, /warning: --crypto-threads 3 is less than the 4 migration slots: each migration still gets 1 thread/);
  });

  it("seals and opens each migration on no more than the host's share, as the crypto backend reports", async function () {
    ferryOk(['vm', 'create', 'ct1', '--host', 'a', '--memory', '64MiB'], cluster.env);
    const destinationResult = async (host: string, migrationId: string): Promise<MigrationResult> => {
      // The destination guest process's own result, asked over its control socket: it is complete
      // once the channel's farewell is over, a moment after the agent committed.
      const guest = await attachGuest(path.join(cluster.hostDir(host), 'guests', 'ct1'));
      assert.ok(guest, `no guest process ct1 on ${host}`);
      try {
        for (let i = 0; i < 200; i++) {
          const info = await guest.migration();
          if (info?.migrationId === migrationId && info.result) return info.result;
          await sleep(50);
        }
      } finally {
        guest.close();
      }
      throw new Error(`no result for ${migrationId} on ${host}`);
    };

    // a (1 thread per migration) -> b (2 per migration).
    const there = await migrate(c, 'ct1', 'a', 'b');
    keys.push(there.key, there.nonce);
    assert.equal(there.result.outcome, 'committed', JSON.stringify(there.result.result?.error));
    assert.deepEqual(there.result.result!.cryptoThreads, { limit: 1, peak: 1 });
    const opened = (await destinationResult('b', there.migrationId)).cryptoThreads;
    assert.equal(opened.limit, 2);
    assert.ok(opened.peak >= 1 && opened.peak <= 2, `b opened on ${opened.peak} threads`);

    // And back: b seals on its 2, a opens on its 1.
    const back = await migrate(c, 'ct1', 'b', 'a');
    keys.push(back.key, back.nonce);
    assert.equal(back.result.outcome, 'committed', JSON.stringify(back.result.result?.error));
    const sealed = back.result.result!.cryptoThreads;
    assert.equal(sealed.limit, 2);
    // The observable can show more than one thread: with two cores a 64 MiB first pass fills batches
    // of several 1 MiB frames, which the addon spreads over both workers allowed.
    if (os.availableParallelism() >= 2) assert.equal(sealed.peak, 2, 'b sealed on 2 threads');
    else assert.equal(sealed.peak, 1);
    assert.deepEqual((await destinationResult('a', back.migrationId)).cryptoThreads, { limit: 1, peak: 1 });

    // The guest processes say what they were given and what they used, for operators reading their logs.
    const guestLog = readFileSync(path.join(cluster.hostDir('a'), 'guests', 'ct1', 'guest.log'), 'utf8');
    assert.match(guestLog, /incoming migration \S+ prepared \(encrypted, crypto on at most 1 thread\)/);
    assert.match(guestLog, /incoming migration \S+: committed; crypto on 1 thread at most/);
  });

  it('leaves no key in any log or state file', function () {
    assert.ok(keys.length > 0);
    const hits = keys.flatMap((k) =>
      findSecret([cluster.root, { name: 'agent a log', text: a.logs() }, { name: 'agent b log', text: b.logs() }], k),
    );
    assert.deepEqual(hits, []);
  });
});
