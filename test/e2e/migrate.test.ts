/**
 * `ferry migrate` end to end: the CLI as a process against real agents. The --json contract (events,
 * then exactly the result object), the modes (required refuses a host that cannot encrypt,
 * opportunistic goes plain with a warning), a failed migration (exit 1, the guest still on the
 * source), and the key's absence from every log, state file and output.
 */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { loadCluster } from '../../src/coordinator/cluster.js';
import { MigrationKey } from '../../src/coordinator/keys.js';
import { migrateGuest } from '../../src/coordinator/migrate.js';
import { resolveTarget } from '../../src/coordinator/target.js';
import { Output } from '../../src/cli/output.js';
import { migrateWithProgress } from '../../src/cli/commands/migrate.js';
import { ferry, ferryOk } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';
import { findSecret } from '../support/secrets.js';
import { jsonLines } from '../support/json-output.js';

const RESULT_KEYS = [
  'type',
  'ok',
  'vm',
  'from',
  'to',
  'mode',
  'backend',
  'totalMs',
  'switchoverMs',
  'bytesSent',
  'zeroPagesSkipped',
  'passes',
  'verified',
  'verifyMs',
  'queuedMs',
  'nicFallback',
  'failovers',
  'error',
];

describe('e2e: ferry migrate', function () {
  let cluster: TestCluster;
  const agents: RunningAgent[] = [];
  const outputs: { name: string; text: string }[] = [];

  const run = (args: string[]) => {
    const r = ferry(args, cluster.env);
    outputs.push({ name: `ferry ${args.join(' ')}`, text: r.stdout + r.stderr });
    return r;
  };
  const where = (name: string) => {
    const r = ferryOk(['vm', 'list', '--json'], cluster.env);
    const guest = jsonLines(r.stdout).find((g) => g.name === name);
    assert.ok(guest, `${name} in ferry vm list: ${r.stdout}`);
    return guest;
  };

  before(async function () {
    cluster = TestCluster.create();
    // a has a passthrough-class NIC, b and c do not.
    await cluster.addHost('a', { sriov: true });
    for (const h of ['b', 'c']) await cluster.addHost(h);
    agents.push(await cluster.startAgent('a'), await cluster.startAgent('b'), await cluster.startAgent('c', ['--no-encryption']));
  });
  after(async function () {
    await cluster?.stop();
  });

  it('moves a guest and ends --json with exactly the result object', function () {
    ferryOk(['vm', 'create', 'm1', '--host', 'a', '--memory', '64MiB', '--workload', 'kv:get=500,set=100'], cluster.env);
    const r = run(['migrate', 'm1', '--to', 'b', '--verify', '--json', '--max-downtime', '300ms', '--streams', '3']);
    assert.equal(r.status, 0, r.stderr);
    const lines = jsonLines(r.stdout);
    const result = lines.pop()!;
    assert.deepEqual(Object.keys(result), RESULT_KEYS);
    assert.equal(result.ok, true);
    assert.equal(result.vm, 'm1');
    assert.equal(result.from, 'a');
    assert.equal(result.to, 'b');
    assert.equal(result.mode, 'encrypted');
    assert.match(result.backend, /^(native|node|webcrypto)(\/[a-z0-9-]+)?$/);
    assert.equal(result.verified, true);
    assert.ok(typeof result.verifyMs === 'number' && result.verifyMs >= 0, JSON.stringify(result));
    assert.equal(result.queuedMs, 0);
    assert.equal(result.nicFallback, false);
    assert.deepEqual(result.failovers, []);
    assert.equal(result.error, null);
    assert.ok(result.passes >= 1 && result.bytesSent > 0 && result.totalMs > 0 && result.switchoverMs >= 0, JSON.stringify(result));
    const types = lines.map((l) => l.type);
    assert.equal(types[0], 'decided');
    assert.ok(lines[0]!.streams === 3);
    for (const t of ['started', 'pass', 'switch-over', 'committed']) assert.ok(types.includes(t), `${t} in ${types}`);
    assert.equal(where('m1').host, 'b');
  });

  it('a guest with a passthrough NIC moving to a host without one: warned before the move starts, and in the result', function () {
    ferryOk(['vm', 'create', 'nic1', '--host', 'a', '--memory', '64MiB', '--nic', 'sriov'], cluster.env);
    const r = run(['migrate', 'nic1', '--to', 'b', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const lines = jsonLines(r.stdout);
    const types = lines.map((l) => l.type);
    const fallback = types.indexOf('nic-fallback');
    assert.ok(fallback > 0 && fallback < types.indexOf('started'), `nic-fallback before started: ${types}`);
    assert.deepEqual(lines[fallback], { type: 'nic-fallback', vm: 'nic1', side: 'coordinator', host: 'b', nic: 'virtio' });
    assert.match(r.stderr, /warning: nic1: b has no passthrough NIC: the guest gets the emulated one \(virtio\) there/);
    assert.equal(lines.at(-1)!.nicFallback, true);
    // It keeps the emulated NIC: a move on from b is no fall-back.
    assert.equal(jsonLines(run(['migrate', 'nic1', '--to', 'a', '--json']).stdout).at(-1)!.nicFallback, false);
    ferryOk(['vm', 'create', 'nic2', '--host', 'a', '--memory', '64MiB', '--nic', 'sriov'], cluster.env);
    const people = run(['migrate', 'nic2', '--to', 'b']);
    assert.equal(people.status, 0, people.stderr);
    assert.match(people.stderr, /warning: nic2: b has no passthrough NIC/);
    assert.match(people.stdout, /NIC\s+passthrough NIC replaced by the emulated one \(virtio\): b has none/);
  });

  it('prints a summary for people, and progress lines on stderr when not a terminal', function () {
    ferryOk(['vm', 'create', 'm2', '--host', 'a', '--memory', '64MiB'], cluster.env);
    const r = run(['migrate', 'm2', '--to', 'b']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /m2 moved a -> b, encrypted/);
    assert.match(r.stdout, /downtime\s+\d/);
    assert.match(r.stdout, /zero pages\s+\d+ skipped/);
    assert.match(r.stdout, /round trip\s+\d+(\.\d)? ms \(the data link's/);
    assert.match(r.stderr, /m2: running: pass 1/);
    assert.ok(!r.stderr.includes('\x1b['), 'no terminal control codes when stderr is a pipe');
  });

  it('refuses a required guest to a host that cannot encrypt, and changes nothing', function () {
    ferryOk(['vm', 'create', 'r1', '--host', 'a', '--memory', '64MiB', '--encrypted-migration', 'required'], cluster.env);
    const before = where('r1');
    const r = run(['migrate', 'r1', '--to', 'c']);
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /encrypted migration is required, but c cannot encrypt \[ERR_FERRY_REFUSED\]/);
    const json = run(['migrate', 'r1', '--to', 'c', '--json']);
    assert.equal(json.status, 1);
    const refusal = jsonLines(json.stdout);
    assert.equal(refusal.length, 1, 'nothing started: only the result line');
    assert.deepEqual(Object.keys(refusal[0]!), RESULT_KEYS);
    assert.deepEqual(
      [refusal[0]!.ok, refusal[0]!.from, refusal[0]!.to, refusal[0]!.mode, refusal[0]!.error.code],
      [false, 'a', 'c', null, 'ERR_FERRY_REFUSED'],
    );
    const after = where('r1');
    assert.equal(after.host, 'a');
    assert.equal(after.pid, before.pid);
    // --mode makes one move stricter than the guest's setting ...
    const forced = run(['migrate', 'm2', '--to', 'c', '--mode', 'required']);
    assert.equal(forced.status, 1);
    assert.equal(where('m2').host, 'b');
    // ... never weaker: refused before any host is asked to do anything, saying how to change the guest.
    for (const mode of ['disabled', 'opportunistic']) {
      const weaker = run(['migrate', 'r1', '--to', 'c', '--mode', mode]);
      assert.equal(weaker.status, 2, weaker.stderr);
      assert.match(
        weaker.stderr,
        new RegExp(
          `--mode ${mode} would weaken guest r1's encrypted-migration required.*ferry vm set r1 --encrypted-migration ${mode} \\[ERR_FERRY_USAGE\\]`,
        ),
      );
    }
    assert.equal(where('r1').pid, before.pid);
  });

  it('moves an opportunistic guest to a host that cannot encrypt in plain text, with a warning', function () {
    const r = run(['migrate', 'm2', '--to', 'c', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const result = jsonLines(r.stdout).pop()!;
    assert.equal(result.mode, 'plain');
    assert.equal(result.backend, 'none');
    assert.match(r.stderr, /warning:.*plain text: c cannot encrypt/);
    assert.equal(where('m2').host, 'c');
  });

  it('exits 1 when the migration fails, with the guest still running on the source', function () {
    ferryOk(['vm', 'create', 'slow1', '--host', 'a', '--memory', '64MiB', '--workload', 'dirty:50MB'], cluster.env);
    const before = where('slow1');
    const r = run(['migrate', 'slow1', '--to', 'b', '--bandwidth', '8Mbit', '--timeout', '1s', '--json']);
    assert.equal(r.status, 1, r.stderr);
    const result = jsonLines(r.stdout).pop()!;
    assert.deepEqual(Object.keys(result), RESULT_KEYS);
    assert.equal(result.ok, false);
    assert.equal(result.error.code, 'ERR_FERRY_TIMEOUT');
    assert.match(r.stderr, /runs on a/);
    const after = where('slow1');
    assert.equal(after.host, 'a');
    assert.equal(after.state, 'running');
    assert.equal(after.pid, before.pid);
  });

  it('leaves the key in no log, state file or output (the coordinator run in-process to know the key)', async function () {
    ferryOk(['vm', 'create', 'k1', '--host', 'a', '--memory', '64MiB', '--workload', 'kv:get=500,set=100'], cluster.env);
    const c = await loadCluster(cluster.file);
    const keys: Buffer[] = [];
    const handedOut: MigrationKey[] = [];
    // The hook is the library's: the ferry command has no way to choose or reveal a key.
    const newKey = () => {
      const k = MigrationKey.generate();
      keys.push(Buffer.from(k.key), Buffer.from(k.nonce));
      handedOut.push(k);
      return k;
    };
    for (const json of [true, false]) {
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      let text = '';
      stdout.on('data', (d) => (text += d));
      stderr.on('data', (d) => (text += d));
      const output = new Output({ json, debug: true, stdout, stderr });
      await migrateWithProgress(
        output,
        { guest: 'k1', cluster: c, to: await resolveTarget(c, json ? 'b' : 'a'), verify: true },
        { newKey },
      );
      outputs.push({ name: `in-process migrate (json: ${json})`, text });
    }
    // The coordinator holds the key only until both requests are written: wiped before the source's first event.
    const wipedAtSourceEvents: boolean[] = [];
    const moved = await migrateGuest(
      { guest: 'k1', cluster: c, to: await resolveTarget(c, 'b'), verify: true },
      {
        newKey,
        onEvent: (e) => {
          if ('side' in e && e.side === 'source') wipedAtSourceEvents.push(handedOut.at(-1)!.isWiped);
        },
      },
    );
    assert.equal(moved.report.ok, true);
    assert.ok(
      wipedAtSourceEvents.length > 0 && wipedAtSourceEvents.every(Boolean),
      'the coordinator wiped its key before the migration ran',
    );
    assert.equal(keys.length, 6);
    for (const k of handedOut) {
      assert.ok(k.isWiped && k.key.every((b) => b === 0) && k.nonce.every((b) => b === 0), 'the coordinator zeroed its key and nonce');
    }
    const hits = keys.flatMap((k) =>
      findSecret([cluster.root, ...agents.map((a) => ({ name: `agent ${a.name} log`, text: a.logs() })), ...outputs], k),
    );
    assert.deepEqual(hits, []);
    // The search works: it finds a key where one is.
    assert.deepEqual(findSecret([{ name: 'planted', text: `x${keys[0]!.toString('base64')}x` }], keys[0]!), ['planted']);
  });
});
