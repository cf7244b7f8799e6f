/** `ferry pki init` and `ferry host init` as an operator runs them: a valid cluster, and bad input that changes nothing. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadCluster } from '../../src/coordinator/cluster.js';
import { ferry, ferryOk } from '../support/cli.js';

function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got: ${stderr}`);
  return lines[0]!;
}

describe('cli: pki init and host init', function () {
  let root: string;
  let file: string;
  let env: NodeJS.ProcessEnv;

  before(function () {
    root = mkdtempSync(path.join(os.tmpdir(), 'ferry-cli-pki-'));
    file = path.join(root, 'pki', 'cluster.yaml');
    env = { FERRY_CLUSTER: file };
    ferryOk(['pki', 'init', '--dir', path.join(root, 'pki')]);
  });
  after(function () {
    rmSync(root, { recursive: true, force: true });
  });

  it('makes a cluster whose hosts have certificates from its CA', async function () {
    const r = ferryOk(
      [
        'host',
        'init',
        'a',
        '--dir',
        path.join(root, 'a'),
        '--control',
        '127.0.0.1:7001',
        '--network',
        '127.0.0.1:7101,10.0.0.1:7102',
        '--advertise',
        '198.51.100.1:7101',
        '--json',
      ],
      env,
    );
    const result = JSON.parse(r.stdout.trim());
    assert.equal(result.ok, true);
    const cluster = await loadCluster(file);
    assert.deepEqual(cluster.hosts.get('a'), {
      name: 'a',
      control: '127.0.0.1:7001',
      networks: [
        { listen: '127.0.0.1:7101', advertise: '198.51.100.1:7101' },
        { listen: '10.0.0.1:7102', advertise: '10.0.0.1:7102' },
      ],
    });
    execFileSync('openssl', ['verify', '-CAfile', cluster.caCert, '-purpose', 'sslserver', path.join(root, 'a', 'host.crt')], {
      stdio: 'pipe',
    });
    assert.equal(statSync(path.join(root, 'a')).mode & 0o777, 0o700);
    for (const f of ['host.key', 'host.json', 'host.crt', 'ca.crt']) assert.equal(statSync(path.join(root, 'a', f)).mode & 0o777, 0o600, f);
    // --cluster wins over FERRY_CLUSTER
    ferryOk(
      ['host', 'init', 'b', '--cluster', file, '--dir', path.join(root, 'b'), '--control', '127.0.0.1:7002', '--network', '127.0.0.1:7103'],
      { FERRY_CLUSTER: '/nonexistent.yaml' },
    );
    assert.ok((await loadCluster(file)).hosts.has('b'));
  });

  it('refuses bad input with exit 2 and one line, and changes nothing', function () {
    const before = readFileSync(file, 'utf8');
    const dir = path.join(root, 'never');
    const cases: [string[], RegExp][] = [
      [['host', 'init', 'Bad_Name', '--dir', dir, '--control', '127.0.0.1:1', '--network', '127.0.0.1:2'], /not a host name/],
      [['host', 'init', 'c', '--dir', dir, '--control', 'nowhere', '--network', '127.0.0.1:2'], /--control: "nowhere" is not HOST:PORT/],
      [['host', 'init', 'c', '--dir', dir, '--control', '127.0.0.1:1', '--network', '127.0.0.1:2,x'], /--network: "x" is not HOST:PORT/],
      [
        ['host', 'init', 'c', '--dir', dir, '--control', '127.0.0.1:1', '--network', '127.0.0.1:2', '--advertise', '1.2.3.4:5,1.2.3.4:6'],
        /--advertise has 2 addresses for 1/,
      ],
      [
        ['host', 'init', 'c', '--dir', dir, '--control', '127.0.0.1:1', '--network', '127.0.0.1:2', '--max-outgoing', '0'],
        /--max-outgoing: 0 is not a whole number from 1 to 64/,
      ],
      [['host', 'init', 'a', '--dir', dir, '--control', '127.0.0.1:1', '--network', '127.0.0.1:2'], /host "a" is already in/],
      [
        ['host', 'init', 'c', '--dir', path.join(root, 'a'), '--control', '127.0.0.1:1', '--network', '127.0.0.1:2'],
        /already exists: use a new directory/,
      ],
      [['host', 'init', 'c', '--dir', dir, '--control', '127.0.0.1:1'], /Missing required argument: network/],
      [
        ['host', 'init', 'c', '--dir', dir, '--control', '127.0.0.1:1', '--network', '127.0.0.1:2', '--frobnicate'],
        /Unknown argument: frobnicate/,
      ],
      [['pki', 'init', '--dir', path.join(root, 'pki')], /already exists: pki init never overwrites/],
    ];
    for (const [args, message] of cases) {
      const r = ferry(args, env);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(oneLine(r.stderr), message);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack without --debug');
    }
    assert.equal(readFileSync(file, 'utf8'), before);
    assert.equal(existsSync(dir), false);
  });

  it('says where to find the cluster file when there is none', function () {
    const r = ferry(['host', 'init', 'c', '--dir', path.join(root, 'c'), '--control', '127.0.0.1:1', '--network', '127.0.0.1:2'], {
      FERRY_CLUSTER: '',
    });
    assert.equal(r.status, 2);
    assert.match(oneLine(r.stderr), /no cluster file: pass --cluster FILE or set FERRY_CLUSTER \[ERR_FERRY_USAGE\]/);
  });

  it('names the file, line and problem of a bad cluster file', function () {
    const bad = path.join(root, 'bad.yaml');
    writeFileSync(bad, readFileSync(file, 'utf8').replace('control: 127.0.0.1:7002', 'control: 127.0.0.1:70000'));
    const r = ferry([
      'host',
      'init',
      'c',
      '--cluster',
      bad,
      '--dir',
      path.join(root, 'c'),
      '--control',
      '127.0.0.1:1',
      '--network',
      '127.0.0.1:2',
    ]);
    assert.equal(r.status, 2);
    assert.match(oneLine(r.stderr), new RegExp(`${bad.replace(/[.]/g, '\\.')}:\\d+:\\d+: hosts\\.b\\.control: port 70000 is out of range`));
    const r2 = ferry([
      'host',
      'init',
      'c',
      '--cluster',
      bad,
      '--dir',
      path.join(root, 'c'),
      '--control',
      '127.0.0.1:1',
      '--network',
      '127.0.0.1:2',
      '--debug',
    ]);
    assert.match(r2.stderr, /\n\s+at /, '--debug shows the stack');
  });

  it('has help with examples for each command', function () {
    for (const cmd of [
      ['pki', 'init'],
      ['host', 'init'],
      ['host', 'serve'],
    ]) {
      const r = ferry([...cmd, '--help']);
      assert.equal(r.status, 0);
      assert.match(r.stdout, /Examples:/, cmd.join(' '));
    }
  });
});
