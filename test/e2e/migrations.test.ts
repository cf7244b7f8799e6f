/**
 * `ferry migrations` and `ferry host serve --metrics` end to end, with real agents as processes: a
 * migration capped so that it lasts a while, listed from both of its sides with a second one queued
 * behind it at the destination; an agent of the cluster file that does not answer, named while the
 * rest are listed; --watch redrawing until Ctrl-C and ending quietly on a closed pipe; the metrics
 * endpoint scraped during the migration (its bytes) and after it (the outcome counters); a bad or
 * taken --metrics address refused before the agent is ready.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { loadCluster, type Cluster } from '../../src/coordinator/cluster.js';
import { BIN, ferry, ferryAsync, ferryOk, startFerry, type FerryChild } from '../support/cli.js';
import { TestCluster, freePort } from '../support/cluster.js';
import { jsonLines } from '../support/json-output.js';
import { waitUntil } from '../support/wait.js';
import { ask } from '../support/migrate.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition. */
function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

function value(all: Sample[], name: string, labels: Record<string, string> = {}): number | null {
  const s = all.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s ? s.value : null;
}

async function scrape(address: string): Promise<{ status: number; type: string | null; text: string; samples: Sample[] }> {
  const res = await fetch(`http://${address}/metrics`);
  const text = await res.text();
  return { status: res.status, type: res.headers.get('content-type'), text, samples: samples(text) };
}

/** The label names a ferry_* metric may carry (docs/operations.md, "Metrics"): names and ids, nothing secret. */
const FERRY_LABELS = new Set([
  'migration_id',
  'guest',
  'role',
  'peer',
  'phase',
  'direction',
  'outcome',
  'host',
  'version',
  'backend',
  'encrypts',
  'le',
]);

describe('e2e: ferry migrations and the metrics endpoint (real agents)', function () {
  this.timeout(240_000);
  let cluster: TestCluster;
  let c: Cluster;
  const metrics = { a: '', b: '' };
  let network = '';

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a');
    await cluster.addHost('b', { maxIncoming: 1 });
    await cluster.addHost('c'); // in the cluster file, its agent never runs: unreachable
    metrics.a = `127.0.0.1:${await freePort()}`;
    metrics.b = `127.0.0.1:${await freePort()}`;
    const [a, b] = await Promise.all([
      cluster.startAgent('a', ['--metrics', metrics.a]),
      cluster.startAgent('b', ['--metrics', metrics.b]),
    ]);
    for (const [agent, address] of [
      [a, metrics.a],
      [b, metrics.b],
    ] as const) {
      assert.match(agent.logs(), new RegExp(`"msg":"agent ready".*"metrics":"${address.replace(/\./g, '\\.')}"`));
    }
    c = await loadCluster(cluster.file);
    network = c.hosts.get('b')!.networks[0]!.listen;
    ferryOk(['vm', 'create', 'g1', '--host', 'a', '--memory', '96MiB', '--workload', 'idle'], cluster.env);
    ferryOk(['vm', 'create', 'g2', '--host', 'a', '--memory', '16MiB', '--workload', 'idle'], cluster.env);
    await waitUntil(
      async () => (await ask(c, 'a', 'guest.list', {})).guests.every((g) => g.workloadReady === true),
      60_000,
      'the guests to fill their memory',
    );
  });
  after(async function () {
    await cluster?.stop();
  });

  it('refuses a bad --metrics address (exit 2) and a taken one (exit 1) before the agent is ready', async function () {
    for (const bad of ['nonsense', '0.0.0.0', '127.0.0.1:99999', 'http://127.0.0.1:9464']) {
      const r = ferry(['host', 'serve', '--dir', cluster.hostDir('c'), '--metrics', bad]);
      assert.equal(r.status, 2, `${bad}: ${r.stderr}`);
      assert.match(r.stderr, /^ferry: --metrics: .*e\.g\. 127\.0\.0\.1:9464 \[ERR_FERRY_USAGE\]\n$/, bad);
      assert.doesNotMatch(r.stderr, /agent ready/);
    }
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const r = await ferryAsync(['host', 'serve', '--dir', cluster.hostDir('c'), '--metrics', `127.0.0.1:${port}`]);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`cannot serve metrics on 127\\.0\\.0\\.1:${port}: EADDRINUSE \\[ERR_FERRY_NETWORK\\]`));
      assert.doesNotMatch(r.stderr, /agent ready/);
    } finally {
      taken.close();
    }
    // Nothing of c's agent was left listening.
    const down = ferry(['probe', 'c', '--json'], cluster.env);
    assert.equal(down.status, 1, down.stderr);
    assert.equal(jsonLines(down.stdout)[0]!.reachable, false);
  });

  it('lists a running migration from both sides and one queued behind it, names the agent that does not answer, and the metrics follow it', async function () {
    const running: FerryChild[] = [];
    try {
      // 96 MiB of random bytes at 48 Mbit/s: about 17 s in pass 1.
      running.push(startFerry(['migrate', 'g1', '--to', 'b', '--bandwidth', '48Mbit', '--json'], cluster.env));
      await waitUntil(
        async () => (await ask(c, 'b', 'migration.list', {})).migrations.some((j) => j.phase === 'running'),
        60_000,
        'g1 to start',
      );
      // b takes one incoming migration at a time: g2 waits in its queue.
      running.push(startFerry(['migrate', 'g2', '--to', 'b', '--bandwidth', '48Mbit', '--json'], cluster.env));

      const listed = await waitUntil(
        async () => {
          const r = await ferryAsync(['migrations', '--json'], cluster.env);
          const lines = jsonLines(r.stdout);
          const g1 = lines.find((l) => l.type === 'migration' && l.guest === 'g1');
          const g2 = lines.find((l) => l.type === 'migration' && l.guest === 'g2');
          return g1 && g1.pass >= 1 && g1.bytesSent > 0 && g2?.phase === 'queued' ? { r, lines, g1, g2 } : null;
        },
        60_000,
        'ferry migrations to show g1 under way and g2 queued',
      );
      const { r, lines, g1, g2 } = listed;
      assert.equal(r.status, 1, 'an agent did not answer: exit 1');
      assert.deepEqual(g1.seenBy, ['source', 'destination'], 'g1 seen from both sides, merged into one');
      assert.equal(g1.from, 'a');
      assert.equal(g1.to, 'b');
      assert.equal(g1.phase, 'running');
      assert.equal(g1.queue, null);
      assert.equal(g1.mode, 'encrypted');
      assert.equal(g1.maxBytesPerSecond, 6_000_000);
      assert.equal(g1.network, network, "the destination's network the data arrived on");
      assert.equal(g1.failovers, 0);
      assert.ok(g1.bytesLeft > 0 && g1.rate > 0, JSON.stringify(g1));
      assert.ok(g1.etaMs === null || g1.etaMs > 0);
      assert.deepEqual(g2.queue, { host: 'b', position: 1 });
      assert.equal(g2.from, 'a');
      assert.equal(g2.to, 'b');
      assert.equal(g2.pass, null);
      assert.equal(lines.filter((l) => l.type === 'migration').length, 2, 'each migration once');
      const unreachable = lines.find((l) => l.type === 'unreachable')!;
      assert.equal(unreachable.host, 'c');
      assert.equal(unreachable.error.code, 'ERR_FERRY_NETWORK');
      const result = lines.at(-1)!;
      assert.equal(result.type, 'result');
      assert.equal(result.ok, false);
      assert.deepEqual(result.unreachable, ['c']);
      assert.equal(result.migrations, 2);

      // The table: both migrations, at most 120 columns, c named on stderr.
      const table = await ferryAsync(['migrations'], cluster.env);
      assert.equal(table.status, 1, table.stderr);
      assert.match(table.stderr, /warning: host c: cannot reach host c at 127\.0\.0\.1:\d+: ECONNREFUSED/);
      assert.match(table.stderr, /could not list the migrations of c.*\[ERR_FERRY_NETWORK\]/);
      const rows = table.stdout.trimEnd().split('\n');
      assert.match(rows[0]!, /^GUEST\s+FROM\s+TO\s+PHASE\s+PASS\s+SENT\s+LEFT\s+RATE\s+DIRTY\s+ETA\s+NETWORK\s+FAILOVERS$/);
      for (const row of rows) assert.ok(row.length <= 120, `${row.length} columns: ${row}`);
      assert.match(
        rows.find((l) => l.startsWith('g1 '))!,
        /^g1\s+a\s+b\s+running\s+1\s+\S+ \S+\s+\S+ \S+\s+\S+ \S+\/s\s+/,
      );
      assert.match(
        rows.find((l) => l.startsWith('g2 '))!,
        /^g2\s+a\s+b\s+queued #1 at b\s+-/,
      );

      // The metrics, scraped during the migration: its bytes on the source, the queue on the destination.
      const during = await scrape(metrics.a);
      assert.equal(during.status, 200);
      assert.match(during.type ?? '', /^text\/plain; version=0\.0\.4/);
      const g1Source = { guest: 'g1', role: 'source', peer: 'b', migration_id: g1.migrationId };
      assert.ok(value(during.samples, 'ferry_migration_sent_bytes', g1Source)! > 0, during.text);
      assert.ok(value(during.samples, 'ferry_migration_remaining_bytes', g1Source)! > 0);
      assert.ok(value(during.samples, 'ferry_migration_transfer_rate_bytes_per_second', g1Source)! > 0);
      assert.notEqual(value(during.samples, 'ferry_migration_dirty_rate_bytes_per_second', g1Source), null);
      assert.equal(value(during.samples, 'ferry_migration_phase', { ...g1Source, phase: 'running' }), 1);
      assert.equal(value(during.samples, 'ferry_migrations_running', { direction: 'outgoing' }), 1);
      assert.match(during.text, /^ferry_crypto_backend_info\{backend="(native|node|webcrypto)[^"]*",encrypts="true"\} 1$/m);
      const atB = await scrape(metrics.b);
      assert.equal(value(atB.samples, 'ferry_migration_queue_length', { direction: 'incoming' }), 1);
      assert.equal(value(atB.samples, 'ferry_migration_queue_position', { guest: 'g2', role: 'destination', peer: 'a' }), 1);
      for (const s of [...during.samples, ...atB.samples].filter((x) => x.name.startsWith('ferry_')))
        for (const label of Object.keys(s.labels)) assert.ok(FERRY_LABELS.has(label), `${s.name} has label ${label}`);

      // --watch: a redraw a second until Ctrl-C, exit 0; the agent that does not answer is named in each redraw.
      const watching = startFerry(['migrations', '--watch'], cluster.env);
      await watching.waitForOutput('stdout', /(ferry migrations, every 1 s[^]*){2}/, 30_000);
      watching.process.kill('SIGINT');
      const watched = await watching.ended;
      assert.equal(watched.status, 0, watched.stderr);
      assert.equal(watched.stderr, '');
      assert.match(watched.stdout, /^g1\s+a\s+b\s+/m);
      assert.match(watched.stdout, /^host c did not answer: cannot reach host c/m);

      // A reader that stops reading: the watch ends quietly (exit 0, no trace), as Unix tools do.
      const piped = spawnSync('bash', ['-c', `set -o pipefail; "${process.execPath}" "${BIN}" migrations --watch | head -1`], {
        encoding: 'utf8',
        env: { ...process.env, ...cluster.env },
        timeout: 30_000,
      });
      assert.equal(piped.status, 0, piped.stderr);
      assert.equal(piped.stderr, '');
      assert.match(piped.stdout, /^ferry migrations, every 1 s/);

      // Both migrations end committed; the counters say so, and no per-migration series is left.
      const ends = [];
      for (const child of running) {
        const end = await child.ended;
        assert.equal(end.status, 0, end.stderr);
        ends.push(jsonLines(end.stdout).at(-1)!);
      }
      // g2's wait in b's queue is its own figure, not part of its move's time.
      assert.equal(ends[0]!.queuedMs, 0);
      assert.ok(ends[1]!.queuedMs > 1000, `g2 queued ${ends[1]!.queuedMs} ms`);
      const after = await scrape(metrics.a);
      assert.equal(value(after.samples, 'ferry_migrations_total', { role: 'source', outcome: 'committed' }), 2);
      assert.equal(value(after.samples, 'ferry_migrations_total', { role: 'source', outcome: 'aborted' }), 0);
      assert.equal(value(after.samples, 'ferry_migration_downtime_seconds_count'), 2);
      assert.ok(value(after.samples, 'ferry_migration_downtime_seconds_sum')! > 0);
      assert.equal(value(after.samples, 'ferry_migration_sent_bytes'), null, 'ended migrations leave no series');
      const bAfter = await scrape(metrics.b);
      assert.equal(value(bAfter.samples, 'ferry_migrations_total', { role: 'destination', outcome: 'committed' }), 2);
      assert.equal(value(bAfter.samples, 'ferry_migration_queue_length', { direction: 'incoming' }), 0);
      const none = await ferryAsync(['migrations'], cluster.env);
      assert.equal(none.stdout, 'no migrations running or queued\n');

      // --watch --json: a snapshot line closes each redraw, the result line the whole watch.
      const jsonWatch = startFerry(['migrations', '--watch', '--json'], cluster.env);
      await jsonWatch.waitForOutput('stdout', /("type":"snapshot"[^]*){2}/, 30_000);
      jsonWatch.process.kill('SIGINT');
      const jsonWatched = await jsonWatch.ended;
      assert.equal(jsonWatched.status, 0, jsonWatched.stderr);
      const watchLines = jsonLines(jsonWatched.stdout);
      const snapshot = watchLines.find((l) => l.type === 'snapshot')!;
      assert.deepEqual({ migrations: snapshot.migrations, unreachable: snapshot.unreachable }, { migrations: 0, unreachable: ['c'] });
      assert.ok(!Number.isNaN(Date.parse(snapshot.at)));
      const last = watchLines.at(-1)!;
      assert.equal(last.type, 'result');
      assert.equal(last.ok, true);
      assert.ok(last.snapshots >= 2);
    } finally {
      for (const child of running) if (child.process.exitCode === null) child.process.kill('SIGKILL');
    }
  });

  it('serves /metrics only, to GET', async function () {
    assert.equal((await fetch(`http://${metrics.a}/`)).status, 404);
    assert.equal((await fetch(`http://${metrics.a}/metrics`, { method: 'POST' })).status, 405);
  });
});
