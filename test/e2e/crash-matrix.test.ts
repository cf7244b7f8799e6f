/**
 * The crash-point matrix: at each named point of the commit protocol (src/agent/crash-point.ts),
 * during a real `ferry migrate` (a process) of a guest whose memory is written and then left
 * alone, one fault strikes: the agent of that side SIGKILLs itself there (as a power cut would
 * leave it) and comes back, or, that agent frozen there, `ferry migrate` is SIGKILLed, the data
 * path or the path to that agent's control API is cut, the other side's agent is SIGKILLed and
 * comes back, or the destination's guest process is SIGKILLed. Afterwards exactly one host runs
 * the guest, no migration of it is left, its memory digest is the one it had before, and the other
 * host keeps neither a guest process nor a directory of it; except where the destination's copy
 * had already run, whose loss is a lost guest (as a crash of that host would be): it is listed
 * stopped there and the source keeps nothing it could bring back. The matrix is printed at the
 * end: each cell's exit, owner and time to settle.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CRASH_POINTS } from '../../src/agent/crash-point.js';
import { loadCluster, type Cluster } from '../../src/coordinator/cluster.js';
import { eachHost } from '../../src/coordinator/connect.js';
import type { GuestInfo } from '../../src/control/protocol.js';
import { GuestClient } from '../../src/guest/index.js';
import { waitUntil } from '../support/wait.js';
import { ferryAsync, startFerry } from '../support/cli.js';
import { TestCluster, type RunningAgent } from '../support/cluster.js';
import { jsonLines } from '../support/json-output.js';
import { processesMentioning, processState } from '../support/processes.js';
import { CuttableRelay } from '../support/relay.js';
import { parseDocument } from 'yaml';
import { sleep } from '../../src/common/async.js';

describe('e2e: the crash-point matrix (FERRY_FAULT, real agents, the CLI as a process)', function () {
  this.timeout(120_000);
  // Each cell: a guest created, moved through its fault, checked and destroyed, about 10 s.
  let cluster: TestCluster;
  let c: Cluster;
  const agents: Record<string, RunningAgent> = {};
  let relay: CuttableRelay;
  const controlRelays: Record<string, CuttableRelay> = {};
  const hostPort = (address: string) => ({
    host: address.slice(0, address.lastIndexOf(':')),
    port: Number(address.slice(address.lastIndexOf(':') + 1)),
  });

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a');
    await cluster.addHost('b');
    agents.a = await cluster.startAgent('a');
    agents.b = await cluster.startAgent('b');
    // b's migration network behind a relay the data-cut cells cut, and each host's control
    // address behind one the control-cut cells cut (the CLI and the other agent dial it).
    const loaded = await loadCluster(cluster.file);
    const network = loaded.hosts.get('b')!.networks[0]!;
    relay = new CuttableRelay(hostPort(network.listen));
    const doc = parseDocument(readFileSync(cluster.file, 'utf8'));
    doc.setIn(['hosts', 'b', 'networks'], [{ listen: network.listen, advertise: await relay.listen() }]);
    for (const h of ['a', 'b']) {
      controlRelays[h] = new CuttableRelay(hostPort(loaded.hosts.get(h)!.control));
      doc.setIn(['hosts', h, 'control'], await controlRelays[h].listen());
    }
    writeFileSync(cluster.file, doc.toString());
    c = await loadCluster(cluster.file);
  });
  after(async function () {
    relay?.close();
    for (const r of Object.values(controlRelays)) r.close();
    await cluster?.stop();
  });

  /** The CLI as a process, not waited for synchronously: the relays live in this process. */
  async function ok(args: string[]): Promise<void> {
    const r = await ferryAsync(args, cluster.env);
    assert.equal(r.status, 0, `ferry ${args.join(' ')}: ${r.stderr}`);
  }

  async function whereabouts(name: string): Promise<Map<string, GuestInfo>> {
    const found = new Map<string, GuestInfo>();
    for (const [host, outcome] of await eachHost(c, ['a', 'b'], (client) => client.call('guest.get', { name }))) {
      if (outcome.ok) found.set(host, outcome.value);
      else if (outcome.error.code !== 'ERR_FERRY_NOT_FOUND') throw outcome.error;
    }
    return found;
  }

  /** The hosts with a migration of guest `name` (or whose agent does not answer). */
  async function migratingOn(name: string): Promise<string[]> {
    const busy = [];
    for (const [host, outcome] of await eachHost(c, ['a', 'b'], (client) => client.call('migration.list', {})))
      if (!outcome.ok || outcome.value.migrations.some((m) => m.guest === name)) busy.push(host);
    return busy;
  }

  /** Exactly one host lists the guest, running, and neither has a migration of it: that host. */
  async function settled(name: string): Promise<string> {
    let last = '';
    return waitUntil(
      async () => {
        const found = await whereabouts(name).catch((err: Error) => new Map([['?', { state: err.message } as GuestInfo]]));
        const busy = await migratingOn(name);
        last = `${JSON.stringify([...found].map(([h, g]) => [h, g.state]))}, migrations on [${busy.join(', ')}]`;
        if (found.size !== 1 || [...found.values()][0]!.state !== 'running' || busy.length > 0) return null;
        return [...found.keys()][0]!;
      },
      60_000,
      () => `guest ${name} to run on exactly one host with no migration left (it is at ${last})`,
    );
  }

  async function digestOn(host: string, name: string): Promise<string> {
    const client = await GuestClient.connect(path.join(cluster.hostDir(host), 'guests', name));
    try {
      return await client.digest();
    } finally {
      client.close();
    }
  }

  /** Starts `host`'s agent afresh with FERRY_FAULT=`fault` (undefined: none). */
  async function restartWith(host: string, fault: string | undefined): Promise<RunningAgent> {
    await agents[host]!.stop('SIGTERM');
    agents[host] = await cluster.startAgent(host, [], { fault });
    return agents[host]!;
  }

  /**
   * The faults of the matrix, each struck at the moment the agent of the point's side reaches it:
   * that agent SIGKILLed there (and started again), or, with the agent frozen there (SIGSTOP),
   * `ferry migrate` SIGKILLed, or every data connection (or every connection to that agent's
   * control API) cut with new ones refused for 2 s, or the other side's agent SIGKILLed (and
   * started again), or the destination's guest process SIGKILLed (at
   * `destination:after-incoming-record`, where it does not exist yet, as soon as it does).
   */
  const FAULTS = [
    'agent-killed',
    'coordinator-killed',
    'data-cut',
    'control-cut',
    'peer-agent-killed',
    'destination-guest-killed',
  ] as const;
  type Fault = (typeof FAULTS)[number];
  const figures: string[] = [];

  after(function () {
    if (figures.length > 0) console.log(`      the matrix:\n${figures.map((f) => `        ${f}`).join('\n')}`);
  });

  const LOSING_POINTS = new Set<string>(['source:before-handoff-record', 'source:after-handoff-record', 'destination:after-commit-record']);
  let n = 0;
  for (const point of CRASH_POINTS) {
    const side = point.startsWith('source:') ? 'a' : 'b';
    for (const fault of FAULTS) {
      // A frozen source agent does not hold its guest process: in pre-copy and at switch-over the
      // move of a 16 MiB guest runs on to its commit before the destination's process can be
      // killed, so that cell would be a race between two outcomes. Its cases are the other points.
      if (fault === 'destination-guest-killed' && (point === 'source:in-precopy' || point === 'source:at-switch-over')) continue;
      const what =
        fault === 'agent-killed'
          ? `the ${side === 'a' ? 'source' : 'destination'} agent dies there and comes back`
          : fault === 'coordinator-killed'
            ? 'ferry migrate is SIGKILLed there'
            : fault === 'data-cut'
              ? 'the data path is cut there'
              : fault === 'control-cut'
                ? "the path to that agent's control API is cut there"
                : fault === 'peer-agent-killed'
                  ? `the ${side === 'a' ? 'destination' : 'source'} agent dies then and comes back`
                  : "the destination's guest process is SIGKILLed there";
      // Once the destination's copy ran, killing its process loses the guest, as a crash of that
      // host would: the source must not bring back its older copy.
      const loses = fault === 'destination-guest-killed' && LOSING_POINTS.has(point);
      const claim = loses
        ? 'the guest is lost on b, not resurrected on a, nothing left on a'
        : 'one running owner, digest intact, nothing left on the other host';
      it(`${point}, ${what}: ${claim}`, async function () {
        const name = `cp${n++}`;
        await ok(['vm', 'create', name, '--host', 'a', '--memory', '16MiB', '--workload', 'idle']);
        await waitUntil(async () => (await whereabouts(name)).get('a')?.workloadReady === true, 30_000, `guest ${name} to fill its memory`);
        const before = await digestOn('a', name);
        const agent = await restartWith(side, fault === 'agent-killed' ? point : `${point}@stop`);
        const migrate = startFerry(['migrate', name, '--to', 'b', '--json'], cluster.env);
        try {
          await strike(fault, side, point, agent, migrate.process, name);
        } finally {
          if (processState(agent.process.pid!) === 'T') agent.process.kill('SIGCONT');
        }
        const end = await migrate.ended;
        const endedAt = performance.now();
        if (loses) {
          await lostOnB(name);
          figures.push(`${point} / ${fault}: ferry migrate exit ${end.status ?? 'killed'}, the guest lost on b (stopped), nothing on a`);
          assert.equal(end.status, 0, `the guest had moved before it was lost: ${end.stderr}`);
          const said = jsonLines(end.stdout).find((e) => e.type === 'not-running');
          assert.equal(said?.state, 'stopped', `ferry migrate says it does not run there: ${end.stdout}`);
          assert.match(end.stderr, /moved to b, but it is stopped there now/);
          if (agents[side]!.process.exitCode === null) await restartWith(side, undefined);
          await ok(['vm', 'destroy', name]);
          return;
        }
        const owner = await settled(name);
        const settleMs = Math.round(performance.now() - endedAt);
        const exit = end.status ?? 'killed';
        figures.push(
          `${point} / ${fault}: ferry migrate exit ${exit}, the guest on ${owner}, settled ${settleMs} ms after ferry migrate ended`,
        );
        // What ferry migrate said is what happened: exit 0 only for a guest that moved, 1 for one that stayed.
        if (end.status === 0) assert.equal(owner, 'b', end.stderr);
        else if (end.status === 1) assert.equal(owner, 'a', `${end.stderr}${JSON.stringify(jsonLines(end.stdout).at(-1))}`);
        else assert.equal(fault, 'coordinator-killed', `ferry migrate exited ${exit}: ${end.stderr}`);
        assert.equal(await digestOn(owner, name), before, 'the memory is the one it had before');
        const other = owner === 'a' ? 'b' : 'a';
        const otherDir = path.join(cluster.hostDir(other), 'guests', name);
        await waitUntil(
          () => !existsSync(otherDir) && processesMentioning(otherDir).length === 0,
          10_000,
          `host ${other} to keep nothing of ${name}`,
        );
        assert.equal(processesMentioning(path.join(cluster.hostDir(owner), 'guests', name)).length, 1, 'one guest process');
        // The next cell starts from agents without a fault armed.
        if (agents[side]!.process.exitCode === null) await restartWith(side, undefined);
        await ok(['vm', 'destroy', name]);
      });
    }
  }

  /** b lists the guest stopped (its process gone), a keeps nothing of it, and neither has a migration of it. */
  async function lostOnB(name: string): Promise<void> {
    const aDir = path.join(cluster.hostDir('a'), 'guests', name);
    let last = '';
    await waitUntil(
      async () => {
        const found = await whereabouts(name);
        const busy = await migratingOn(name);
        last = `${JSON.stringify([...found].map(([h, g]) => [h, g.state]))}, migrations on [${busy.join(', ')}]`;
        return found.size === 1 && found.get('b')?.state === 'stopped' && busy.length === 0 && !existsSync(aDir);
      },
      60_000,
      () => `guest ${name} to be listed stopped on b only, with no migration left (it is at ${last})`,
    );
    assert.deepEqual(processesMentioning(aDir), [], 'no guest process on a');
  }

  async function strike(fault: Fault, side: string, point: string, agent: RunningAgent, cli: ChildProcess, name: string): Promise<void> {
    if (fault === 'agent-killed') {
      await waitUntil(() => agent.process.signalCode === 'SIGKILL', 60_000, `the agent of ${side} to die at ${point}`);
      agents[side] = await cluster.startAgent(side);
      return;
    }
    await waitUntil(() => processState(agent.process.pid!) === 'T', 60_000, `the agent of ${side} to stop at ${point}`);
    if (fault === 'peer-agent-killed') {
      const other = side === 'a' ? 'b' : 'a';
      const peer = agents[other]!.process;
      peer.kill('SIGKILL');
      await waitUntil(() => peer.exitCode !== null || peer.signalCode !== null, 10_000, `the agent of ${other} to die`);
      agents[other] = await cluster.startAgent(other);
    } else if (fault === 'destination-guest-killed') {
      const dir = path.join(cluster.hostDir('b'), 'guests', name);
      const killAll = () => processesMentioning(dir).forEach((pid) => process.kill(pid, 'SIGKILL'));
      if (point === 'destination:after-incoming-record') {
        // Not started yet: killed as soon as it is.
        agent.process.kill('SIGCONT');
        await waitUntil(() => processesMentioning(dir).length > 0, 30_000, `the incoming guest process of ${name} to start`);
      }
      killAll();
    } else if (fault === 'coordinator-killed') {
      cli.kill('SIGKILL');
      await new Promise((resolve) => (cli.exitCode !== null || cli.signalCode !== null ? resolve(null) : cli.once('exit', resolve)));
    } else {
      const cut = fault === 'data-cut' ? relay : controlRelays[side]!;
      cut.partitioned = true;
      cut.cut();
      await sleep(2000);
      cut.partitioned = false;
    }
    agent.process.kill('SIGCONT');
  }
});
