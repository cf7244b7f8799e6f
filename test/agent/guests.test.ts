/**
 * Guests through the CLI and real agents: vm create / list / set / destroy end to end, and a guest
 * that outlives a SIGKILLed agent and is re-attached by the next one.
 */
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { alive } from '../support/processes.js';
import { waitUntil } from '../support/wait.js';
import { ferry } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';

const jsonLines = (stdout: string) =>
  stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));

describe('agent: guests end to end (real agents and guest processes)', function () {
  let cluster: TestCluster;
  let a: RunningAgent;
  let b: RunningAgent;
  const run = (args: string[]) => ferry(args, cluster.env);

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a', { sriov: true });
    await cluster.addHost('b');
    a = await cluster.startAgent('a');
    b = await cluster.startAgent('b');
  });
  after(async function () {
    await cluster?.stop();
  });

  it('creates a guest and lists it', function () {
    const r = run([
      'vm',
      'create',
      'g1',
      '--host',
      'a',
      '--memory',
      '64MiB',
      '--disk',
      '1MiB',
      '--workload',
      'kv:get=200,set=100',
      '--nic',
      'sriov',
      '--json',
    ]);
    assert.equal(r.status, 0, r.stderr);
    const [created] = jsonLines(r.stdout);
    assert.equal(created.type, 'result');
    assert.equal(created.guest.state, 'running');
    assert.ok(alive(created.guest.pid));

    const list = run(['vm', 'list', '--json']);
    assert.equal(list.status, 0, list.stderr);
    const guests = jsonLines(list.stdout);
    assert.equal(guests.length, 1);
    assert.deepEqual(
      { ...guests[0], state: undefined, pid: undefined, opsPerSecond: undefined, workloadReady: undefined },
      {
        pid: undefined,
        opsPerSecond: undefined,
        workloadReady: undefined,
        type: 'guest',
        name: 'g1',
        host: 'a',
        state: undefined,
        memoryBytes: 64 * 2 ** 20,
        diskBytes: 2 ** 20,
        driver: 'synthetic',
        encryptedMigration: 'opportunistic',
        nic: 'sriov',
        workload: { kind: 'kv', getsPerSecond: 200, setsPerSecond: 100 },
        generation: 0,
        stale: false,
      },
    );
    assert.match(guests[0].state, /^(running|paused)$/);
    assert.equal(guests[0].pid, created.guest.pid);
    const table = run(['vm', 'list']);
    assert.match(table.stdout, /^NAME\s+HOST\s+STATE/m);
    assert.match(table.stdout, /^g1\s+a\s+running\s+64\.0 MiB\s+1\.00 MiB\s+synthetic\s+sriov\s+opportunistic$/m);
    const statFile = path.join(cluster.hostDir('a'), 'guests', 'g1.json');
    assert.equal(statSync(statFile).mode & 0o777, 0o600);
  });

  it('refuses a second guest of the same name anywhere, and a passthrough NIC on a host without one', function () {
    const dup = run(['vm', 'create', 'g1', '--host', 'b', '--memory', '64MiB']);
    assert.equal(dup.status, 2);
    assert.match(dup.stderr, /guest "g1" already exists on host a/);
    const nic = run(['vm', 'create', 'g2', '--host', 'b', '--memory', '64MiB', '--nic', 'sriov']);
    assert.equal(nic.status, 1);
    assert.match(nic.stderr, /host b has no passthrough-class NIC/);
    assert.equal(existsSync(path.join(cluster.hostDir('b'), 'guests', 'g2.json')), false);
    const host = run(['vm', 'create', 'g2', '--host', 'nope', '--memory', '64MiB']);
    assert.equal(host.status, 2);
    assert.match(host.stderr, /no host "nope"/);
  });

  it('changes the encrypted-migration setting', function () {
    const r = run(['vm', 'set', 'g1', '--encrypted-migration', 'required']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(jsonLines(run(['vm', 'list', '--host', 'a', '--json']).stdout)[0].encryptedMigration, 'required');
  });

  it('keeps the guest running through SIGKILL of its agent; the next agent re-attaches', async function () {
    const before = jsonLines(run(['vm', 'list', '--json']).stdout)[0];
    await a.stop('SIGKILL');
    assert.ok(alive(before.pid), 'the guest outlived its agent');
    a = await cluster.startAgent('a');
    await a.waitForLog(/"msg":"guest re-attached".*"guest":"g1"/);
    const after = jsonLines(run(['vm', 'list', '--json']).stdout)[0];
    assert.equal(after.state, 'running');
    assert.equal(after.encryptedMigration, 'required');
    // SIGTERM too: the agent goes, the guest stays.
    assert.equal(await a.stop('SIGTERM'), 0);
    assert.ok(alive(before.pid));
    a = await cluster.startAgent('a');
  });

  it('lists what it can and exits 1 when a host does not answer', async function () {
    await b.stop('SIGTERM');
    const r = run(['vm', 'list', '--json']);
    assert.equal(r.status, 1);
    const lines = jsonLines(r.stdout);
    assert.equal(lines[0].name, 'g1');
    assert.equal(lines.at(-1).type, 'result');
    assert.equal(lines.at(-1).error.code, 'ERR_FERRY_NETWORK');
    assert.match(r.stderr, /host b: cannot reach host b/);
    b = await cluster.startAgent('b');
  });

  it('lists a guest whose process does not answer as unknown, not running, and will not move it', function () {
    this.timeout(30_000);
    const { pid } = jsonLines(run(['vm', 'list', '--json']).stdout)[0];
    process.kill(pid, 'SIGSTOP');
    try {
      const listed = jsonLines(run(['vm', 'list', '--json']).stdout)[0];
      assert.equal(listed.state, 'unknown');
      assert.equal(listed.pid, pid);
      const r = run(['migrate', 'g1', '--to', 'b']);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /guest "g1" on host a did not answer its agent .*only a running or paused guest can move/);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assert.equal(jsonLines(run(['vm', 'list', '--json']).stdout)[0].state, 'running');
  });

  it('destroys the guest: process, directory and record', async function () {
    const { pid } = jsonLines(run(['vm', 'list', '--json']).stdout)[0];
    const r = run(['vm', 'destroy', 'g1']);
    assert.equal(r.status, 0, r.stderr);
    await waitUntil(() => !alive(pid), 5000, 'the guest process to exit');
    assert.equal(existsSync(path.join(cluster.hostDir('a'), 'guests', 'g1')), false);
    assert.equal(existsSync(path.join(cluster.hostDir('a'), 'guests', 'g1.json')), false);
    assert.equal(run(['vm', 'list', '--json']).stdout, '');
    const again = run(['vm', 'destroy', 'g1']);
    assert.equal(again.status, 2);
    assert.match(again.stderr, /no guest "g1" on any host/);
  });
});
