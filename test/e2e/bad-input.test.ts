/**
 * Bad input end to end: each gets one line on stderr, a coded message, exit 2 (1 for what fails
 * while talking to hosts), a stack only with --debug, and nothing changes on any host. Also
 * `ferry probe` (an unreachable host is a result, not a crash), help with examples, completion.
 *
 * The agent's side of foreign certificates (a client of another CA, none, expired) is tested with
 * raw TLS clients in test/agent/control.test.ts; here is what the CLI says about its own.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ferry, ferryOk } from '../support/cli.js';
import { TestCluster } from '../support/cluster.js';
import { jsonLines, placements } from '../support/json-output.js';

describe('e2e: bad input and probe', function () {
  let cluster: TestCluster;
  let other: TestCluster;
  let initial: string[];
  let abFile: string;
  const env = () => ({ FERRY_CLUSTER: abFile });

  const list = () => placements(jsonLines(ferryOk(['vm', 'list', '--json'], env()).stdout));

  /** Runs the CLI and checks: exit status, exactly one stderr line matching, nothing on stdout. */
  function refused(args: string[], status: number, message: RegExp, environment = env()) {
    const r = ferry(args, environment);
    assert.equal(r.status, status, `ferry ${args.join(' ')}: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, message);
    assert.equal(r.stdout, '');
    return r;
  }

  before(async function () {
    cluster = TestCluster.create();
    other = TestCluster.create();
    await cluster.addHost('a');
    await cluster.addHost('b');
    abFile = path.join(cluster.pkiDir, 'ab.yaml');
    copyFileSync(cluster.file, abFile); // hosts a and b only: most cases here must not meet host d
    await cluster.addHost('d'); // never started: unreachable
    await Promise.all([cluster.startAgent('a'), cluster.startAgent('b')]);
    ferryOk(['vm', 'create', 'g', '--host', 'a', '--memory', '64MiB'], cluster.env);
    initial = list();
  });
  after(async function () {
    await cluster?.stop();
    await other?.stop();
  });

  const usage: [string[], RegExp][] = [
    [['migrate', 'g', '--to', 'b', '--bogus'], /Unknown argument: bogus/],
    [['migrate', 'g'], /Missing required argument: to/],
    [['migrate', 'G!', '--to', 'b'], /"G!" is not a guest name/],
    [['migrate', 'g', '--to', 'b', '--max-downtime', '5parsecs'], /--max-downtime: unknown unit "parsecs"/],
    [['migrate', 'g', '--to', 'b', '--bandwidth', '10XB'], /--bandwidth: unknown unit "XB"/],
    [['migrate', 'g', '--to', 'b', '--streams', '0'], /--streams: 0 is not a whole number from 1 to 16/],
    [['migrate', 'g', '--to', 'b', '--mode', 'always'], /--mode: "always" is not one of disabled, opportunistic, required/],
    [['migrate', 'g', '--to', 'b:c:'], /--to: "b:c:" is not HOST or CLUSTER_FILE:HOST/],
    [['evacuate', 'a', '--concurrency', '0'], /--concurrency: 0 is not a whole number from 1 to 64/],
    [['evacuate', 'a', '--to', 'a'], /--to: a is the host being evacuated/],
    [['resolve', 'G!'], /"G!" is not a guest name/],
    [['resolve', 'g', '--to', 'b:c:'], /--to: "b:c:" is not HOST or CLUSTER_FILE:HOST/],
    [['demo', '--memory', '1XB'], /--memory: unknown unit "XB" in "1XB"/],
    [['vm', 'create', 'h', '--host', 'a', '--memory', '1XB'], /--memory: unknown unit "XB" in "1XB"/],
  ];
  for (const [args, message] of usage) {
    it(`exit 2: ferry ${args.join(' ')}`, function () {
      refused(args, 2, message);
    });
  }

  it('exit 1: resolve of a guest that waits for no decision', function () {
    refused(['resolve', 'g'], 1, /guest "g" is running on a, not waiting in doubt: nothing to resolve \[ERR_FERRY_REFUSED\]/);
  });

  it('exit 2: a guest or host that does not exist', function () {
    refused(['migrate', 'nosuch', '--to', 'b'], 2, /no guest "nosuch" on any host of .*ab\.yaml \[ERR_FERRY_NOT_FOUND\]/);
    refused(['migrate', 'g', '--to', 'zz'], 2, /no host "zz" in .*ab\.yaml \(hosts: a, b\) \[ERR_FERRY_NOT_FOUND\]/);
    refused(['evacuate', 'zz'], 2, /no host "zz"/);
    refused(['probe', 'zz'], 2, /no host "zz"/);
    refused(['migrate', 'g', '--to', 'a'], 2, /guest "g" already runs on host a \[ERR_FERRY_INPUT\]/);
    refused(['resolve', 'nosuch'], 2, /no guest "nosuch" on any host of .*ab\.yaml \[ERR_FERRY_NOT_FOUND\]/);
  });

  it('exit 2: a malformed cluster file, named with its line', function () {
    const bad = path.join(cluster.root, 'bad.yaml');
    writeFileSync(
      bad,
      'ca: { cert: ca.crt }\ncoordinator: { cert: c.crt, key: c.key }\nhosts:\n  a:\n    control: 10.0.0.1\n    networks: [127.0.0.1:1]\n',
    );
    refused(['migrate', 'g', '--to', 'b', '--cluster', bad], 2, /bad\.yaml:5:14: hosts\.a\.control: "10\.0\.0\.1" is not HOST:PORT/);
    refused(['evacuate', 'a', '--cluster', path.join(cluster.root, 'none.yaml')], 2, /cannot read cluster file .*none\.yaml: ENOENT/);
  });

  it('exit 2: our own certificate from another CA or expired; no host is asked', function () {
    const foreign = path.join(cluster.pkiDir, 'foreign.yaml');
    copyFileSync(other.file.replace('cluster.yaml', 'coordinator.crt'), path.join(cluster.pkiDir, 'foreign.crt'));
    copyFileSync(other.file.replace('cluster.yaml', 'coordinator.key'), path.join(cluster.pkiDir, 'foreign.key'));
    const ours = ferryOk(['vm', 'list', '--json'], env()); // the cluster file as it is works
    assert.ok(ours.stdout.length > 0);
    const text = (name: string) =>
      execFileSync('cat', [abFile], { encoding: 'utf8' })
        .replace('cert: coordinator.crt', `cert: ${name}.crt`)
        .replace('key: coordinator.key', `key: ${name}.key`);
    writeFileSync(foreign, text('foreign'));
    refused(
      ['migrate', 'g', '--to', 'b', '--cluster', foreign],
      2,
      /the coordinator certificate .*foreign\.crt was not signed by the cluster CA \(named in .*foreign\.yaml\) \[ERR_FERRY_INPUT\]/,
    );

    const dir = cluster.pkiDir;
    execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', path.join(dir, 'expired.key')]);
    execFileSync('openssl', [
      'req',
      '-new',
      '-key',
      path.join(dir, 'expired.key'),
      '-subj',
      '/CN=ferry coordinator',
      '-out',
      path.join(dir, 'expired.csr'),
    ]);
    execFileSync(
      'openssl',
      [
        'x509',
        '-req',
        '-in',
        path.join(dir, 'expired.csr'),
        '-CA',
        path.join(dir, 'ca.crt'),
        '-CAkey',
        path.join(dir, 'ca.key'),
        '-days',
        '-1',
        '-out',
        path.join(dir, 'expired.crt'),
      ],
      { stdio: 'ignore' },
    );
    const expired = path.join(dir, 'expired.yaml');
    writeFileSync(expired, text('expired'));
    refused(['evacuate', 'a', '--cluster', expired], 2, /the coordinator certificate .*expired\.crt expired on .* \[ERR_FERRY_INPUT\]/);
  });

  it('exit 1: an agent whose certificate another CA signed is refused by the CLI', function () {
    // A cluster file of the other CA that names our agent a: the CLI must not talk to it.
    const file = path.join(other.pkiDir, 'cluster.yaml');
    const a = execFileSync('cat', [abFile], { encoding: 'utf8' }).split('hosts:')[1]!;
    writeFileSync(file, execFileSync('cat', [file], { encoding: 'utf8' }).replace('hosts: {}', `hosts:${a}`));
    // Every agent of it distrusted: one short line that names the likely mistake, whatever the command.
    const wrongFile =
      /^ferry: no agent of .*cluster\.yaml \(a, b\) and this cluster's certificates trust each other: is --cluster or FERRY_CLUSTER the wrong file\? \[ERR_FERRY_REFUSED\]$/;
    for (const args of [['migrate', 'g', '--to', 'b'], ['vm', 'list'], ['migrations']]) {
      const r = refused([...args, '--cluster', file], 1, wrongFile);
      assert.ok(r.stderr.length < 200, `${r.stderr.length} characters: ${r.stderr}`);
    }
    // One host alone: its own reason.
    const one = ferry(['probe', 'a', '--cluster', file]);
    assert.equal(one.status, 1, one.stderr);
    assert.match(
      one.stdout,
      /^a: unreachable: the agent at .* \(host a\) has a certificate the cluster CA did not sign or that is not valid/m,
    );
  });

  it('exit 1: an unreachable agent', function () {
    refused(['migrate', 'g', '--to', 'd'], 1, /cannot reach host d at 127\.0\.0\.1:\d+: ECONNREFUSED \[ERR_FERRY_NETWORK\]/, cluster.env);
  });

  it('a stack trace only with --debug', function () {
    const r = ferry(['migrate', 'nosuch', '--to', 'b', '--debug'], env());
    assert.equal(r.status, 2);
    assert.match(r.stderr, /\n\s+at /);
  });

  it('probe: one JSON object per host; an unreachable one reported as such, exit 1', function () {
    const r = ferry(['probe', '--json'], cluster.env);
    assert.equal(r.status, 1, r.stderr);
    const hosts = jsonLines(r.stdout);
    const result = hosts.pop()!;
    assert.deepEqual([result.type, result.ok, result.unreachable, result.error.code], ['result', false, ['d'], 'ERR_FERRY_NETWORK']);
    assert.deepEqual(
      hosts.map((h) => h.host),
      ['a', 'b', 'd'],
    );
    const a = hosts[0]!;
    assert.equal(a.reachable, true);
    assert.equal(a.upgradeNeeded, false);
    assert.equal(a.encrypts, true);
    assert.ok(a.sealGBps > 0, `seal ${a.sealGBps}`);
    assert.equal(a.networks.length, 1);
    assert.equal(a.networks[0].answers, true);
    assert.deepEqual(a.guests, ['g']);
    assert.ok(a.freeMemoryBytes > 0 && Array.isArray(a.cpuFeatures) && typeof a.qemu === 'boolean');
    assert.deepEqual(a.limits, { outgoing: 2, incoming: 2, cryptoThreads: null });
    assert.equal(a.cryptoThreadsPerMigration, null);
    assert.equal(hosts[2]!.reachable, false);
    assert.equal(hosts[2]!.error.code, 'ERR_FERRY_NETWORK');
    assert.match(r.stderr, /could not reach d/);
    const table = ferry(['probe', 'a', 'b'], cluster.env);
    assert.equal(table.status, 0, table.stderr);
    assert.match(table.stdout, /^HOST\s+AGENT\s+ENCRYPTS/);
    assert.match(table.stdout, /\na\s+0\.\d+\.\d+\s+yes/);
    // It fits 120 columns; --wide has every column; a host that does not answer is a line below the table.
    for (const line of table.stdout.split('\n')) assert.ok(line.length <= 120, `${line.length} columns: ${line}`);
    assert.doesNotMatch(table.stdout, /CRYPTO THREADS/);
    const wide = ferry(['probe', '--wide'], cluster.env);
    assert.equal(wide.status, 1, wide.stderr);
    assert.match(
      wide.stdout,
      /^HOST\s+AGENT\s+ENCRYPTS\s+BACKEND\s+CPU\s+SEAL\s+NETWORKS\s+FREE\/TOTAL\s+GUESTS\s+LIMITS OUT\/IN\s+CRYPTO THREADS\s+QEMU$/m,
    );
    assert.match(wide.stdout, /\nd: unreachable: cannot reach host d at 127\.0\.0\.1:\d+: ECONNREFUSED$/m);
  });

  it('changed nothing on any host', function () {
    assert.deepEqual(list(), initial);
  });

  it('has help with examples for every command, and shell completion', function () {
    for (const cmd of [
      ['migrate'],
      ['evacuate'],
      ['resolve'],
      ['probe'],
      ['demo'],
      ['pki', 'init'],
      ['host', 'init'],
      ['host', 'serve'],
      ['vm', 'create'],
      ['vm', 'list'],
      ['vm', 'set'],
      ['vm', 'destroy'],
      ['completion'],
    ]) {
      const r = ferry([...cmd, '--help']);
      assert.equal(r.status, 0, cmd.join(' '));
      assert.match(r.stdout, /Examples:/, cmd.join(' '));
      assert.doesNotMatch(r.stdout, /begin-ferry-completions/, `${cmd.join(' ')} --help is help`);
    }
    const c = ferry(['completion']);
    assert.equal(c.status, 0);
    assert.match(c.stdout, /_ferry_yargs_completions|complete -o/);
    assert.match(c.stdout, /Installation: ferry completion >> ~\/\.bashrc/);
  });

  it('completes host names from the cluster file and guest names from the agents, quietly past one that does not answer', function () {
    const complete = (...words: string[]) => {
      const started = performance.now();
      const r = ferry(['--get-yargs-completions', 'ferry', ...words], cluster.env);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '', 'silent');
      assert.ok(performance.now() - started < 10_000, 'a short timeout for agents that do not answer');
      return r.stdout.split('\n').filter(Boolean);
    };
    // d is in the cluster file and never started.
    assert.deepEqual(complete('migrate', 'g', '--to', ''), ['a', 'b', 'd']);
    assert.deepEqual(complete('evacuate', ''), ['a', 'b', 'd']);
    assert.deepEqual(complete('probe', 'a', ''), ['a', 'b', 'd']);
    assert.deepEqual(complete('vm', 'create', 'x', '--host', 'b'), ['b']);
    assert.deepEqual(complete('migrate', ''), ['g']);
    assert.deepEqual(complete('vm', 'show', 'g'), ['g']);
    assert.deepEqual(complete('vm', 'show', 'nosuch'), []);
    // Elsewhere, yargs' own: commands and flags.
    assert.ok(complete('').includes('migrate'));
    assert.ok(complete('migrate', 'g', '--').includes('--to'));
    // No cluster file: nothing to offer, and no complaint.
    const none = ferry(['--get-yargs-completions', 'ferry', 'migrate', ''], { FERRY_CLUSTER: path.join(cluster.root, 'none.yaml') });
    assert.equal(none.status, 0);
    assert.equal(none.stdout + none.stderr, '');
  });
});
