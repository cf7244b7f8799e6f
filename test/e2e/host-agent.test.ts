/**
 * Running agents as operators do: one agent per state directory (a second one exits at once, a
 * dead one's lock is taken over), logs to a file, the readiness fd, `ferry host wait`, and the
 * systemd unit `ferry host unit` prints.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { BIN, ferry, ferryAsync, ferryOk } from '../support/cli.js';
import { TestCluster } from '../support/cluster.js';
import { jsonLines } from '../support/json-output.js';
import { alive } from '../support/processes.js';

/** Exit `status` and exactly one stderr line matching `message`. */
function refused(r: { status: number | null; stderr: string }, status: number, message: RegExp): void {
  assert.equal(r.status, status, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, message);
}

/** Runs a shell command line under a pseudo-terminal (util-linux `script`), so the command's stderr is a terminal. */
function underTerminal(commandLine: string, timeoutMs: number) {
  return spawnSync('script', ['-qec', commandLine, '/dev/null'], { encoding: 'utf8', timeout: timeoutMs });
}

describe('e2e: host agents as operators run them', function () {
  let cluster: TestCluster;

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a');
    await cluster.addHost('b'); // its agent never runs here
  });
  after(async function () {
    await cluster?.stop();
  });

  describe('one agent per state directory', function () {
    it('refuses a second agent at once, naming the pid of the first, and changes nothing', async function () {
      const first = await cluster.startAgent('a');
      ferryOk(['vm', 'create', 'g1', '--host', 'a', '--memory', '16MiB'], cluster.env);
      const guestPid = cluster.guestPids()[0]!;
      const started = Date.now();
      const second = ferry(['host', 'serve', '--dir', cluster.hostDir('a')], {}, { timeoutMs: 20_000 });
      assert.equal(second.status, 1, second.stderr);
      assert.ok(Date.now() - started < 20_000, 'the second agent took its time to give up'); // a node start on a loaded machine, no wait
      const line = second.stderr.trim();
      assert.equal(line.split('\n').length, 1, second.stderr);
      assert.match(
        line,
        new RegExp(`is in use by another agent \\(pid ${first.process.pid}\\).*kill ${first.process.pid}.*\\[ERR_FERRY_REFUSED\\]`),
      );
      // The first agent still serves, and its guest runs on with the same process.
      assert.ok(alive(first.process.pid!));
      const guests = JSON.parse(ferryOk(['vm', 'list', '--host', 'a', '--json'], cluster.env).stdout.trim()) as {
        name: string;
        pid: number;
      };
      assert.equal(guests.name, 'g1');
      assert.equal(guests.pid, guestPid);
      assert.equal(readFileSync(path.join(cluster.hostDir('a'), 'agent.pid'), 'utf8'), `${first.process.pid}\n`);
      assert.equal(await first.stop(), 0);
    });

    it('takes over the lock of an agent that was killed, and its guests with it', async function () {
      const killed = await cluster.startAgent('a');
      const deadPid = killed.process.pid!;
      await killed.stop('SIGKILL');
      // The killed agent's pid file is still there: a stale lock by its look.
      assert.equal(readFileSync(path.join(cluster.hostDir('a'), 'agent.pid'), 'utf8'), `${deadPid}\n`);
      const next = await cluster.startAgent('a');
      await next.waitForLog(new RegExp(`"msg":"took over the state directory of an agent that did not stop".*"pid":${deadPid}`));
      assert.equal(readFileSync(path.join(cluster.hostDir('a'), 'agent.pid'), 'utf8'), `${next.process.pid}\n`);
      const guest = JSON.parse(ferryOk(['vm', 'list', '--host', 'a', '--json'], cluster.env).stdout.trim()) as {
        name: string;
        state: string;
      };
      assert.deepEqual([guest.name, guest.state], ['g1', 'running']);
      assert.equal(await next.stop(), 0);
    });

    it('lets the directory go when it stops, so the next agent starts without a warning', async function () {
      const one = await cluster.startAgent('a');
      assert.equal(await one.stop(), 0);
      assert.throws(() => readFileSync(path.join(cluster.hostDir('a'), 'agent.pid')), /ENOENT/);
      const two = await cluster.startAgent('a');
      assert.doesNotMatch(two.logs(), /took over/);
      await two.stop();
    });

    it('says plainly when the directory does not exist', function () {
      const r = ferry(['host', 'serve', '--dir', path.join(cluster.root, 'nowhere')]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /nowhere is not a host directory \(no host\.json\): run `ferry host init` first \[ERR_FERRY_NOT_FOUND\]/);
    });
  });
  describe('logs, readiness and host wait', function () {
    it('--log-file: JSON lines in the file, nothing on stderr; --ready-fd says READY=1 once it listens', async function () {
      const logFile = path.join(cluster.root, 'a.log');
      const child = spawn(
        process.execPath,
        [BIN, 'host', 'serve', '--dir', cluster.hostDir('a'), '--log-file', logFile, '--ready-fd', '3'],
        {
          stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
        },
      );
      let stderr = '';
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const ready = await new Promise<string>((resolve, reject) => {
        let text = '';
        const fd3 = child.stdio[3] as Readable;
        fd3.setEncoding('utf8').on('data', (d: string) => (text += d));
        fd3.on('end', () => resolve(text)); // the agent closes it once it has written
        child.once('exit', (code) => reject(new Error(`the agent exited (${code}) before it was ready: ${stderr}`)));
      });
      try {
        assert.equal(ready, 'READY=1\n');
        // Ready means listening: the control API answers at once.
        const wait = ferry(['host', 'wait', 'a', '--timeout', '1s'], cluster.env);
        assert.equal(wait.status, 0, wait.stderr);
        assert.match(wait.stdout, /^host a answers at 127\.0\.0\.1:\d+ \(ferry [\d.]+\) after /);
        const lines = readFileSync(logFile, 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { msg: string; host?: string });
        assert.ok(
          lines.some((l) => l.msg === 'agent ready' && l.host === 'a'),
          readFileSync(logFile, 'utf8'),
        );
      } finally {
        child.kill('SIGTERM');
        await new Promise((resolve) => child.once('close', resolve));
      }
      assert.equal(stderr, '', 'the agent wrote to stderr though it logs to a file');
      assert.match(readFileSync(logFile, 'utf8'), /"msg":"agent stopped"/);
    });

    it('on a terminal, a short line when ready and when stopped instead of JSON', function () {
      if (spawnSync('script', ['--version']).status !== 0) {
        console.log('      skipped: no `script` (util-linux) to give the agent a terminal');
        this.skip();
      }
      const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
      const r = underTerminal(
        `${q(process.execPath)} ${q(BIN)} host serve --dir ${q(cluster.hostDir('a'))} & sleep 4; kill $!; wait`,
        30_000,
      );
      assert.match(
        r.stdout,
        /ferry agent a ready: control 127\.0\.0\.1:\d+, migration networks 127\.0\.0\.1:\d+ \(pid \d+; --log-file FILE keeps the full log\)/,
      );
      assert.match(r.stdout, /ferry agent a stopped/);
      assert.doesNotMatch(r.stdout, /"msg"/);
    });

    it('host wait returns once the agent answers, by name or from its state directory', async function () {
      const waiting = ferryAsync(['host', 'wait', 'a', '--timeout', '30s'], cluster.env);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const agent = await cluster.startAgent('a');
      try {
        const r = await waiting;
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, /^host a answers at /);
        // --dir asks with the host's own certificate: no cluster file needed.
        const byDir = ferry(['host', 'wait', '--dir', cluster.hostDir('a'), '--json'], { FERRY_CLUSTER: '' });
        assert.equal(byDir.status, 0, byDir.stderr);
        const result = jsonLines(byDir.stdout).at(-1)!;
        assert.deepEqual([result.ok, result.host, result.control], [true, 'a', agent.control]);
      } finally {
        await agent.stop();
      }
    });

    it('host wait gives up after --timeout, and refuses bad input with exit 2', function () {
      const started = Date.now();
      refused(
        ferry(['host', 'wait', 'b', '--timeout', '1s'], cluster.env),
        1,
        /host b did not answer at 127\.0\.0\.1:\d+ within 1s \(last: cannot reach host b at .*ECONNREFUSED\) \[ERR_FERRY_TIMEOUT\]/,
      );
      assert.ok(Date.now() - started < 15_000);
      refused(
        ferry(['host', 'wait', 'a', '--timeout', '5parsecs'], cluster.env),
        2,
        /--timeout: unknown unit "parsecs".*\[ERR_FERRY_USAGE\]/,
      );
      refused(ferry(['host', 'wait', 'zz'], cluster.env), 2, /no host "zz" in .*\[ERR_FERRY_NOT_FOUND\]/);
      refused(ferry(['host', 'wait'], cluster.env), 2, /name the host to wait for, or give --dir HOSTDIR \[ERR_FERRY_USAGE\]/);
      refused(ferry(['host', 'wait', 'a', '--dir', cluster.hostDir('a')], cluster.env), 2, /not both \[ERR_FERRY_USAGE\]/);
      refused(ferry(['host', 'wait', '--dir', cluster.root]), 2, /is not a host directory \(no host\.json\).*\[ERR_FERRY_NOT_FOUND\]/);
    });

    it('host serve refuses a readiness fd that is not there and a log file it cannot open, before it starts', function () {
      const dir = cluster.hostDir('a');
      refused(
        ferry(['host', 'serve', '--dir', dir, '--ready-fd', '2']),
        2,
        /--ready-fd: 2: a file descriptor of 3 or more.*\[ERR_FERRY_USAGE\]/,
      );
      refused(
        ferry(['host', 'serve', '--dir', dir, '--ready-fd', '9']),
        2,
        /--ready-fd 9: no such file descriptor open for writing from the caller.*\[ERR_FERRY_USAGE\]/,
      );
      refused(
        ferry(['host', 'serve', '--dir', dir, '--log-file', path.join(cluster.root, 'no', 'such', 'dir', 'a.log')]),
        2,
        /--log-file .*a\.log: cannot open .* to append \(ENOENT\) \[ERR_FERRY_INPUT\]/,
      );
      assert.equal(existsSync(path.join(dir, 'agent.pid')), false, 'an agent started');
    });
  });

  it('has help with examples for each of these commands', function () {
    for (const cmd of [
      ['host', 'serve'],
      ['host', 'wait'],
      ['host', 'unit'],
      ['host', 'list'],
      ['host', 'remove'],
      ['vm', 'show'],
    ]) {
      const r = ferry([...cmd, '--help']);
      assert.equal(r.status, 0, cmd.join(' '));
      assert.match(r.stdout, /Examples:/, cmd.join(' '));
    }
  });

  describe('host unit', function () {
    it('prints a systemd unit that runs the agent, waits for it, and leaves the guests alone on stop', function () {
      const r = ferryOk(['host', 'unit', '--dir', cluster.hostDir('a')]);
      const unit = r.stdout;
      const serve = `ExecStart=${process.execPath} ${BIN} host serve --dir ${cluster.hostDir('a')}`;
      assert.ok(unit.split('\n').includes(serve), unit);
      assert.ok(
        unit.split('\n').includes(`ExecStartPost=${process.execPath} ${BIN} host wait --dir ${cluster.hostDir('a')} --timeout 60s`),
        unit,
      );
      for (const line of [
        'Type=simple',
        'KillMode=process',
        'Restart=on-failure',
        'WantedBy=multi-user.target',
        'Description=ferry host agent (host a)',
      ])
        assert.ok(unit.split('\n').includes(line), `${line} in ${unit}`);
      const file = path.join(cluster.root, 'ferry-agent-a.service');
      writeFileSync(file, unit);
      const verify = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
      if (verify.error) console.log('      (no systemd-analyze here: the unit is not verified by systemd)');
      else assert.equal(verify.status, 0, verify.stderr);
      refused(ferry(['host', 'unit', '--dir', cluster.root]), 2, /is not a host directory/);
      refused(ferry(['host', 'unit', '--dir', cluster.hostDir('a'), '--start-timeout', '0s']), 2, /--start-timeout: 0s is less than 1s/);
    });
  });

  describe('host list, host remove, vm show', function () {
    let agent: Awaited<ReturnType<TestCluster['startAgent']>>;
    before(async function () {
      agent = await cluster.startAgent('a');
    });
    after(async function () {
      await agent?.stop();
    });

    it('host list shows every host of the cluster file and whether its agent answers', function () {
      const r = ferry(['host', 'list'], cluster.env);
      assert.equal(r.status, 0, r.stderr);
      const [header, a, b] = r.stdout.trim().split('\n');
      assert.match(header!, /^NAME\s+CONTROL\s+MIGRATION NETWORKS\s+AGENT\s+GUESTS\s+MEMORY FOR GUESTS$/);
      assert.match(
        a!,
        new RegExp(`^a\\s+${agent.control.replace(/\./g, '\\.')}\\s+127\\.0\\.0\\.1:\\d+\\s+up, ferry [\\d.]+\\s+1\\s+[\\d.]+ GiB$`),
      );
      assert.match(b!, /^b\s+127\.0\.0\.1:\d+\s+127\.0\.0\.1:\d+\s+down\s+-\s+-$/);
      assert.match(r.stderr, /warning: host b: cannot reach host b at .*ECONNREFUSED/);
      const lines = jsonLines(ferryOk(['host', 'list', '--json'], cluster.env).stdout);
      assert.deepEqual(
        lines.map((l) => [l.type, l.name ?? null, l.type === 'host' ? l.reachable : null]),
        [
          ['host', 'a', true],
          ['host', 'b', false],
          ['result', null, null],
        ],
      );
      assert.equal(lines[0]!.guests, 1);
      assert.equal(lines[2]!.reachable, 1);
    });

    it('vm show prints one guest in detail, and --json the whole of it', function () {
      const r = ferryOk(['vm', 'show', 'g1'], cluster.env);
      const fields = Object.fromEntries(
        r.stdout
          .trim()
          .split('\n')
          .map((l) => [l.split(':')[0], l.slice(l.indexOf(':') + 1).trim()]),
      );
      assert.equal(fields.host, 'a');
      assert.equal(fields.state, 'running');
      assert.equal(fields.memory, '16.0 MiB');
      assert.equal(fields.workload, 'idle');
      assert.match(fields.pid!, /^\d+$/);
      const result = jsonLines(ferryOk(['vm', 'show', 'g1', '--json'], cluster.env).stdout).at(-1)!;
      assert.deepEqual([result.ok, result.guest.name, result.guest.host, result.guest.memoryBytes], [true, 'g1', 'a', 16 * 2 ** 20]);
      refused(ferry(['vm', 'show', 'nope'], cluster.env), 1, /guest "nope" is on no host that answered; could not ask b/);
      refused(ferry(['vm', 'show', 'No!'], cluster.env), 2, /"No!" is not a guest name/);
    });

    it('host remove refuses a host with guests or one it cannot ask, and takes an empty one out', function () {
      const file = readFileSync(cluster.file, 'utf8');
      refused(
        ferry(['host', 'remove', 'a'], cluster.env),
        1,
        /host a has 1 guest \(g1\): move them \(ferry evacuate a\) or destroy them first; nothing was removed \[ERR_FERRY_REFUSED\]/,
      );
      refused(
        ferry(['host', 'remove', 'b'], cluster.env),
        1,
        /cannot ask host b whether it has guests .*pass --force if the host is gone for good; nothing was removed \[ERR_FERRY_REFUSED\]/,
      );
      refused(ferry(['host', 'remove', 'zz'], cluster.env), 2, /no host "zz" in/);
      assert.equal(readFileSync(cluster.file, 'utf8'), file);
      const r = ferry(['host', 'remove', 'b', '--force'], cluster.env);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /warning: host b could not be asked whether it has guests/);
      assert.match(r.stdout, /host b removed from .*cluster\.yaml/);
      assert.deepEqual(
        jsonLines(ferryOk(['host', 'list', '--json'], cluster.env).stdout).map((l) => l.name ?? l.type),
        ['a', 'result'],
      );
      // Comments and the other hosts are kept.
      assert.match(readFileSync(cluster.file, 'utf8'), /^# ferry cluster file/);
      ferryOk(['vm', 'destroy', 'g1'], cluster.env);
    });
  });
});
