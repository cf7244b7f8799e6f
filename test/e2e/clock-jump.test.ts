/**
 * A wall clock that jumps: every process of the cluster (agents, guest processes, the CLI) runs
 * with test/support/clock-jump.mjs, so its Date.now() jumps an hour forward and back four times
 * a second. Every timeout, deadline and backoff of ferry runs on the monotonic clock (the lint rule
 * against Date.now in src/ keeps it so), so nothing fires early or stalls: a move commits, and a
 * source in doubt after its destination died at switch-over keeps asking through its backoff and
 * resumes within seconds of the destination's return.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadCluster, type Cluster } from '../../src/coordinator/cluster.js';
import { eachHost } from '../../src/coordinator/connect.js';
import type { GuestInfo } from '../../src/control/protocol.js';
import { GuestClient } from '../../src/guest/index.js';
import { sleep } from '../../src/common/async.js';
import { ferryAsync, ferryOk, startFerry } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';
import { jsonLines } from '../support/json-output.js';
import { waitUntil } from '../support/wait.js';

const PRELOAD = pathToFileURL(path.join(import.meta.dirname, '..', 'support', 'clock-jump.mjs')).href;

describe('e2e: a wall clock jumping an hour forward and back four times a second, in every process', function () {
  let cluster: TestCluster;
  let c: Cluster;
  const agents: Record<string, RunningAgent> = {};
  const nodeOptions = process.env.NODE_OPTIONS;

  before(async function () {
    process.env.NODE_OPTIONS = `${nodeOptions ?? ''} --import=${PRELOAD}`.trim();
    cluster = TestCluster.create();
    await cluster.addHost('a');
    await cluster.addHost('b');
    agents.a = await cluster.startAgent('a');
    agents.b = await cluster.startAgent('b');
    c = await loadCluster(cluster.file);
  });
  after(async function () {
    if (nodeOptions === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = nodeOptions;
    await cluster?.stop();
  });

  async function on(host: string, name: string): Promise<GuestInfo | undefined> {
    const [[, outcome]] = await eachHost(c, [host], (client) => client.call('guest.get', { name }));
    return outcome!.ok ? outcome!.value : undefined;
  }

  function createFilled(name: string): Promise<unknown> {
    ferryOk(['vm', 'create', name, '--host', 'a', '--memory', '32MiB', '--workload', 'dirty:4MB'], cluster.env);
    return waitUntil(async () => (await on('a', name))?.workloadReady === true, 30_000, `guest ${name} to fill its memory`);
  }

  it('a move commits', async function () {
    await createFilled('j1');
    const r = await ferryAsync(['migrate', 'j1', '--to', 'b', '--json'], cluster.env);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(jsonLines(r.stdout).at(-1)!.ok, true);
    assert.equal((await on('b', 'j1'))?.state, 'running');
    assert.equal(await on('a', 'j1'), undefined);
  });

  it('a destination dead at switch-over for 8 s: the source stays paused in doubt, asks on, and resumes within seconds of its return', async function () {
    await createFilled('j2');
    await agents.b!.stop('SIGKILL');
    const b = (agents.b = await cluster.startAgent('b', [], { fault: 'destination:before-commit-record' }));
    const migrate = startFerry(['migrate', 'j2', '--to', 'b', '--json'], cluster.env);
    await waitUntil(() => b.process.signalCode === 'SIGKILL', 60_000, 'the destination agent to die at its crash point');
    // Its incoming guest process goes too, so the source is in doubt (the channel lost after COMPLETE).
    const incoming = await waitUntil(
      () => GuestClient.connect(path.join(cluster.hostDir('b'), 'guests', 'j2')).catch(() => null),
      30_000,
      "b's incoming guest",
    );
    await waitUntil(async () => (await incoming.migration())?.phase === 'ready-to-commit', 30_000, "b's copy ready to commit");
    incoming.close();
    process.kill(incoming.pid, 'SIGKILL');
    await waitUntil(async () => (await on('a', 'j2'))?.state === 'in-doubt', 30_000, 'guest j2 in doubt on a');
    await sleep(8000); // the resolve queries back off (1, 2, 4 s) while the clocks jump
    assert.equal((await on('a', 'j2'))?.state, 'in-doubt', 'still paused, asking');
    const restartedAt = performance.now();
    agents.b = await cluster.startAgent('b');
    await waitUntil(async () => (await on('a', 'j2'))?.state === 'running', 15_000, 'the source guest to resume');
    console.log(
      `      from the restarted destination agent to the source's guest resumed: ${(performance.now() - restartedAt).toFixed(0)} ms`,
    );
    const end = await migrate.ended;
    assert.equal(end.status, 1, end.stderr);
    assert.equal(await on('b', 'j2'), undefined);
  });

  it("the agents' clocks do jump (their log times over these moves span an hour)", async function () {
    const times = agents
      .a!.logs()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => Date.parse((JSON.parse(l) as { time: string }).time));
    assert.ok(Math.max(...times) - Math.min(...times) > 3_500_000, `log times ${times.map((t) => new Date(t).toISOString()).join(', ')}`);
  });
});
