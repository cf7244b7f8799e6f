/**
 * Running agents as operators do: one agent per state directory (a second one exits at once, a
 * dead one's lock is taken over), logs to a file, the readiness fd, `ferry host wait`, and the
 * systemd unit `ferry host unit` prints.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ferry, ferryOk } from '../support/cli.js';
import { TestCluster } from '../support/cluster.js';
import { alive } from '../support/processes.js';

describe('e2e: host agents as operators run them', function () {
  let cluster: TestCluster;

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a');
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
      assert.ok(Date.now() - started < 10_000, 'the second agent took its time to give up');
      const line = second.stderr.trim();
      assert.equal(line.split('\n').length, 1, second.stderr);
      assert.match(
        line,
        new RegExp(`is in use by another agent \\(pid ${first.process.pid}\\).*kill ${first.process.pid}.*\\[ERR_FERRY_REFUSED\\]`),
      );
      // The first agent still serves, and its guest runs on with the same process.
      assert.ok(alive(first.process.pid!));
      const guests = JSON.parse(ferryOk(['vm', 'list', '--json'], cluster.env).stdout.trim()) as { name: string; pid: number };
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
      const guest = JSON.parse(ferryOk(['vm', 'list', '--json'], cluster.env).stdout.trim()) as { name: string; state: string };
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
      assert.match(r.stderr, /nowhere does not exist: run `ferry host init` first \[ERR_FERRY_NOT_FOUND\]/);
    });
  });
});
