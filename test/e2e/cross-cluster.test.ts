/**
 * A move to a host of another cluster (`--to OTHER_CLUSTER_FILE:HOST`): each agent gets the spec
 * over its own cluster's mTLS, with its own CA; the data plane needs nothing but the key. A source
 * left in doubt cannot ask that cluster's agent itself: the coordinator asks and relays.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseDocument } from 'yaml';
import { loadCluster } from '../../src/coordinator/cluster.js';
import { ferry, ferryOk, startFerry } from '../support/cli.js';
import { waitUntil } from '../support/wait.js';
import { TestCluster } from '../support/cluster.js';
import { CuttableRelay } from '../support/relay.js';
import { jsonLines } from '../support/json-output.js';

describe('e2e: cross-cluster migration', function () {
  let east: TestCluster;
  let west: TestCluster;

  before(async function () {
    east = TestCluster.create();
    west = TestCluster.create();
    await east.addHost('a');
    await west.addHost('a'); // the same name in another cluster is another host
    await Promise.all([east.startAgent('a'), west.startAgent('a')]);
  });
  after(async function () {
    await east?.stop();
    await west?.stop();
  });

  /** Runs `fn` while west's migration address, as east's sources are told it, goes through a relay. */
  async function throughRelay(fn: (relay: CuttableRelay) => Promise<void>): Promise<void> {
    const west_ = await loadCluster(west.file);
    const listen = west_.hosts.get('a')!.networks[0]!.listen;
    const [host, port] = listen.split(':');
    const relay = new CuttableRelay({ host: host!, port: Number(port) });
    const original = readFileSync(west.file, 'utf8');
    try {
      const doc = parseDocument(original);
      doc.setIn(['hosts', 'a', 'networks'], [{ listen, advertise: await relay.listen() }]);
      writeFileSync(west.file, doc.toString());
      await fn(relay);
    } finally {
      relay.close();
      writeFileSync(west.file, original);
    }
  }

  it('moves a guest to a host of another cluster, each agent told over its own CA', function () {
    ferryOk(['vm', 'create', 'x1', '--host', 'a', '--memory', '64MiB', '--workload', 'kv:get=500,set=100'], east.env);
    const r = ferry(['migrate', 'x1', '--to', `${west.file}:a`, '--verify', '--json'], east.env);
    assert.equal(r.status, 0, r.stderr);
    const result = jsonLines(r.stdout).pop()!;
    assert.equal(result.ok, true);
    assert.equal(result.to, `${west.file}:a`);
    assert.equal(result.mode, 'encrypted');
    assert.equal(result.verified, true);
    const inWest = jsonLines(ferryOk(['vm', 'list', '--json'], west.env).stdout);
    assert.deepEqual(
      inWest.map((g) => [g.name, g.host, g.state]),
      [['x1', 'a', 'running']],
    );
    assert.deepEqual(jsonLines(ferryOk(['vm', 'list', '--json'], east.env).stdout), []);
  });

  it('refuses a cluster file that does not exist, or a host it does not have', function () {
    const missing = ferry(['migrate', 'x1', '--to', '/nonexistent/cluster.yaml:a'], west.env);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /cannot read cluster file \/nonexistent\/cluster\.yaml: ENOENT/);
    const nohost = ferry(['migrate', 'x1', '--to', `${east.file}:zz`], west.env);
    assert.equal(nohost.status, 2);
    assert.match(nohost.stderr, /no host "zz" in .*cluster\.yaml/);
  });

  it("a source left in doubt (the COMMITTED lost on the way back) gets the destination's decision through the coordinator", async function () {
    await throughRelay(async (relay) => {
      ferryOk(['vm', 'create', 'x2', '--host', 'a', '--memory', '32MiB', '--workload', 'kv:get=500,set=100'], east.env);
      const child = startFerry(['migrate', 'x2', '--to', `${west.file}:a`, '--json'], east.env);
      const events: Array<Record<string, unknown>> = [];
      for await (const line of createInterface({ input: child.process.stdout })) {
        const e = JSON.parse(line) as Record<string, unknown>;
        events.push(e);
        if (e.type === 'switch-over' && !relay.muteReplies) {
          // The destination gets everything and commits; its COMMITTED never arrives, then the
          // data network goes: the source is left paused, in doubt.
          relay.muteReplies = true;
          setTimeout(() => {
            relay.partitioned = true;
            relay.cut();
          }, 1500);
        }
      }
      const { status, stderr } = await child.ended;
      const types = events.filter((e) => e.side === 'source').map((e) => e.type);
      assert.ok(types.includes('in-doubt'), `the source was in doubt: ${types.join(', ')}; ${stderr}`);
      assert.ok(types.includes('resolving'), 'it could not ask the other cluster itself');
      assert.deepEqual(
        events.find((e) => e.type === 'resolved'),
        { vm: 'x2', side: 'source', type: 'resolved', decision: 'committed' },
      );
      const result = events.pop()!;
      assert.equal(status, 0, stderr);
      assert.equal(result.ok, true);
      const inWest = jsonLines(ferryOk(['vm', 'list', '--json'], west.env).stdout);
      assert.deepEqual(
        inWest.filter((g) => g.name === 'x2').map((g) => [g.host, g.state]),
        [['a', 'running']],
      );
      assert.deepEqual(
        jsonLines(ferryOk(['vm', 'list', '--json'], east.env).stdout).filter((g) => g.name === 'x2'),
        [],
      );
    });
  });

  it('a source left in doubt after the coordinator died too is settled by `ferry resolve --to FILE:HOST`', async function () {
    await throughRelay(async (relay) => {
      ferryOk(['vm', 'create', 'x3', '--host', 'a', '--memory', '32MiB', '--workload', 'kv:get=500,set=100'], east.env);
      const child = startFerry(['migrate', 'x3', '--to', `${west.file}:a`, '--json'], east.env);
      for await (const line of createInterface({ input: child.process.stdout })) {
        const e = JSON.parse(line) as Record<string, unknown>;
        if (e.type === 'switch-over' && !relay.muteReplies) {
          // The COMMITTED never comes back, the coordinator dies, then the data network goes.
          relay.muteReplies = true;
          child.process.kill('SIGKILL');
          setTimeout(() => {
            relay.partitioned = true;
            relay.cut();
          }, 1500);
        }
      }
      const state = () => jsonLines(ferryOk(['vm', 'list', '--json'], east.env).stdout).find((g) => g.name === 'x3')?.state;
      await waitUntil(
        () => state() === 'in-doubt',
        30_000,
        () => `the source to wait, paused, for a decision nobody relays (it is ${state()})`,
      );

      // The recorded destination is west's a: east's own a (another control address) is refused.
      const wrong = ferry(['resolve', 'x3'], east.env);
      assert.equal(wrong.status, 2, wrong.stderr);
      assert.match(
        wrong.stderr,
        /went to host "a" at .*, not to a at .*: name its cluster file with --to CLUSTER_FILE:HOST \[ERR_FERRY_USAGE\]/,
      );
      assert.equal(state(), 'in-doubt', 'the refusal changed nothing');

      const r = ferry(['resolve', 'x3', '--to', `${west.file}:a`, '--json'], east.env);
      assert.equal(r.status, 0, r.stderr);
      const result = jsonLines(r.stdout).pop()!;
      assert.equal(result.decision, 'committed');
      assert.equal(result.runsOn, `${west.file}:a`);
      assert.equal(result.from, 'a');
      await waitUntil(
        () => state() === undefined,
        10_000,
        () => `the source to let its copy go (it is ${state()})`,
      );
      const inWest = jsonLines(ferryOk(['vm', 'list', '--json'], west.env).stdout);
      assert.deepEqual(
        inWest.filter((g) => g.name === 'x3').map((g) => [g.host, g.state]),
        [['a', 'running']],
      );
      const again = ferry(['resolve', 'x3', '--to', `${west.file}:a`], east.env);
      assert.equal(again.status, 2, 'nothing left to resolve: x3 is on no host of east');
    });
  });
});
