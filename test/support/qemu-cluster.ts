/**
 * QEMU guests on a cluster of real agents (test/support/cluster.ts), created and moved through the
 * CLI, and what the end-to-end tests check after every move and every fault: a guest runs as
 * exactly one QEMU process (found by the `-uuid` on its command line), on the host that says it
 * runs it; every other host has no QEMU, no guest process, no guest directory and no socket of it;
 * and ferry's test guest, which re-checks its memory without end, finds it intact where it runs.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { loadCluster } from '../../src/coordinator/cluster.js';
import { eachHost } from '../../src/coordinator/connect.js';
import type { GuestInfo, Method, Params, Result } from '../../src/control/protocol.js';
import { CONSOLE_LOG, QEMU_PID_FILE } from '../../src/guest/qemu/argv.js';
import { resolveQemu } from '../../src/guest/qemu/probe.js';
import { parseTestGuestLog, type TestGuestLine } from '../../src/guest/qemu/test-guest.js';
import { CONFIG_FILE, LOG_FILE } from '../../src/guest/files.js';
import { ferryAsync, ferryOk, type CliResult } from './cli.js';
import { jsonLines } from './json-output.js';
import { ask } from './migrate.js';
import { TestCluster, type HostOptions, type RunningAgent } from './cluster.js';
import { alive, processesMentioning } from './processes.js';
import { waitUntil } from './wait.js';

/**
 * The hooks of a suite of end-to-end QEMU tests: a cluster of `hosts` before them (`use` gets it;
 * without QEMU the suite is skipped, saying why), after each test the agents it killed restarted
 * and every guest cleared, and at the end everything of the cluster stopped.
 */
export function useQemuCluster(hosts: Record<string, HostOptions>, use: (cluster: QemuCluster) => void): void {
  let q: QemuCluster | null = null;
  before(async function () {
    const { missing } = resolveQemu();
    if (missing) {
      console.log(`      skipped: ${missing}`);
      this.skip();
    }
    q = await QemuCluster.start(hosts);
    use(q);
  });
  afterEach(async function () {
    await q?.restartDeadAgents();
    await q?.clear();
  });
  after(async function () {
    await q?.stop();
  });
}

export interface QemuProcess {
  pid: number;
  /** The guest directory it runs in (from its -pidfile). */
  dir: string;
  /** Stopped by a signal (SIGSTOP): alive, running nothing. */
  stopped: boolean;
}

/** Every live QEMU process of the guest with this uuid. */
export function qemusOf(uuid: string): QemuProcess[] {
  return processesMentioning(uuid).flatMap((pid) => {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (argv[argv.indexOf('-uuid') + 1] !== uuid || !alive(pid)) return [];
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      return [{ pid, dir: path.dirname(argv[argv.indexOf('-pidfile') + 1]!), stopped: state === 'T' || state === 't' }];
    } catch {
      return []; // gone meanwhile
    }
  });
}

/** Unix sockets bound (or once bound, their files since removed) at a path under `dir`. */
export function socketsUnder(dir: string): string[] {
  const prefix = `${dir}/`;
  return readFileSync('/proc/net/unix', 'utf8')
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/)[7] ?? '')
    .filter((p) => p.startsWith(prefix));
}

export function consoleOf(dir: string): TestGuestLine[] {
  try {
    return parseTestGuestLog(readFileSync(path.join(dir, CONSOLE_LOG), 'utf8'));
  } catch {
    return [];
  }
}

/** Live processes whose command line names guest directory `dir` (the guest process's argument, QEMU's files in it). */
export function processesIn(dir: string): number[] {
  return [...new Set([...processesMentioning(`${dir}/`), ...processesMentioning(`${dir}\0`)])].sort((a, b) => a - b);
}

const damage = (lines: TestGuestLine[]) => lines.filter((l) => l.kind === 'fail' || l.kind === 'error' || (l.kind === 'check' && !l.ok));

export interface CliMigration {
  status: number | null;
  events: Record<string, any>[];
  result: Record<string, any>;
  stdout: string;
  stderr: string;
}

/** A finished `ferry migrate --json`: events, then the result line (asserted there). */
export function migrateOutput(r: CliResult): CliMigration {
  const lines = jsonLines(r.stdout);
  const result = lines.at(-1);
  assert.equal(result?.type, 'result', `ferry migrate printed no result line: ${r.stdout}${r.stderr}`);
  return { status: r.status, events: lines.slice(0, -1), result: result!, stdout: r.stdout, stderr: r.stderr };
}

export class QemuCluster {
  readonly agents: Record<string, RunningAgent> = {};
  private readonly uuids = new Map<string, string>();

  private constructor(readonly cluster: TestCluster) {}

  /** A cluster with these hosts, every agent running. */
  static async start(hosts: Record<string, HostOptions>): Promise<QemuCluster> {
    const q = new QemuCluster(TestCluster.create('ferry-qemu-e2e-'));
    try {
      for (const [name, options] of Object.entries(hosts)) await q.cluster.addHost(name, options);
      for (const name of Object.keys(hosts)) q.agents[name] = await q.cluster.startAgent(name);
    } catch (err) {
      await q.stop();
      throw err;
    }
    return q;
  }

  get env(): { FERRY_CLUSTER: string } {
    return this.cluster.env;
  }

  get hosts(): string[] {
    return Object.keys(this.agents);
  }

  guestDir(host: string, name: string): string {
    return path.join(this.cluster.hostDir(host), 'guests', name);
  }

  uuid(name: string): string {
    const uuid = this.uuids.get(name);
    assert.ok(uuid, `guest ${name} was not created by this cluster`);
    return uuid;
  }

  /** The guest's one QEMU, asserted to be the only one. */
  qemu(name: string): QemuProcess {
    const found = qemusOf(this.uuid(name));
    assert.equal(found.length, 1, `one QEMU of ${name}: ${JSON.stringify(found)}`);
    return found[0]!;
  }

  /** `ferry vm create` of a test guest on `host`, then waits until it has filled its memory and checked it once. */
  async create(
    name: string,
    host: string,
    { memory = '96MiB', append = 'fill=64 window=4 rate=max', encryptedMigration = 'opportunistic' } = {},
  ): Promise<void> {
    ferryOk(
      [
        'vm',
        'create',
        name,
        '--host',
        host,
        '--driver',
        'qemu',
        '--memory',
        memory,
        '--append',
        append,
        '--encrypted-migration',
        encryptedMigration,
      ],
      this.env,
    );
    const config = JSON.parse(readFileSync(path.join(this.guestDir(host, name), CONFIG_FILE), 'utf8')) as { uuid: string };
    this.uuids.set(name, config.uuid);
    await this.checksPass(host, name, 1, 120_000);
  }

  /** Waits until the guest on `host` finished `sweeps` more checks of its memory than now; asserts none found damage. */
  async checksPass(host: string, name: string, sweeps = 1, ms = 60_000): Promise<void> {
    const dir = this.guestDir(host, name);
    const done = () => consoleOf(dir).filter((l) => l.kind === 'check').length;
    const start = done();
    await waitUntil(
      () => damage(consoleOf(dir)).length > 0 || done() >= start + sweeps,
      ms,
      `${sweeps} more memory checks of ${name} on ${host}`,
    );
    assert.deepEqual(damage(consoleOf(dir)), [], `guest ${name} on ${host} found its memory damaged`);
  }

  /** The guest process's log on `host` (its QEMU's migration steps are there). */
  guestLog(host: string, name: string): string {
    try {
      return readFileSync(path.join(this.guestDir(host, name), LOG_FILE), 'utf8');
    } catch {
      return '';
    }
  }

  /** What each host's agent says of guest `name`; `unknown`: hosts whose agent did not answer, and why. */
  async whereabouts(name: string): Promise<{ found: Map<string, GuestInfo>; unknown: string[] }> {
    const c = await loadCluster(this.cluster.file);
    const found = new Map<string, GuestInfo>();
    const unknown: string[] = [];
    for (const [host, outcome] of await eachHost(c, this.hosts, (client) => client.call('guest.get', { name }))) {
      if (outcome.ok) found.set(host, outcome.value);
      else if (outcome.error.code !== 'ERR_FERRY_NOT_FOUND') unknown.push(`${host}: ${outcome.error.code}`);
    }
    return { found, unknown };
  }

  /**
   * Waits until guest `name` has settled on `home` (or on whichever host, when `home` is null),
   * then asserts it runs there as exactly one QEMU and one guest process, and that no other host
   * has a QEMU, guest process, guest directory or socket of it. Returns the host.
   */
  async runsOnlyOn(name: string, home: string | null, ms = 90_000): Promise<string> {
    const uuid = this.uuid(name);
    let seen = '';
    const settledHost = async (): Promise<string | null> => {
      const { found, unknown } = await this.whereabouts(name);
      const qemus = qemusOf(uuid);
      const leftovers = this.hosts.filter(
        (h) => !found.has(h) && (existsSync(this.guestDir(h, name)) || processesIn(this.guestDir(h, name)).length > 0),
      );
      seen = `agents: ${JSON.stringify([...found].map(([h, g]) => [h, g.state, g.pid]))}, not answering: ${JSON.stringify(unknown)}; QEMUs: ${JSON.stringify(qemus)}; left on ${JSON.stringify(leftovers)}`;
      if (unknown.length > 0 || found.size !== 1 || qemus.length !== 1 || leftovers.length > 0) return null;
      const [host, info] = [...found][0]!;
      return info.state === 'running' && (home === null || host === home) ? host : null;
    };
    await waitUntil(settledHost, ms, () => `guest ${name} to run on ${home ?? 'exactly one host'} alone (${seen})`);
    const host = (await settledHost())!;
    const dir = this.guestDir(host, name);
    const qemu = this.qemu(name);
    assert.equal(qemu.dir, dir, `the QEMU of ${name} runs in ${host}'s guest directory`);
    assert.equal(qemu.stopped, false, `the QEMU of ${name} is not stopped`);
    const info = (await this.whereabouts(name)).found.get(host)!;
    assert.deepEqual(
      processesIn(dir),
      [info.pid!, qemu.pid].sort((a, b) => a - b),
      `on ${host}: the guest process and its QEMU, nothing else`,
    );
    assert.equal(Number(readFileSync(path.join(dir, QEMU_PID_FILE), 'utf8')), qemu.pid);
    for (const other of this.hosts.filter((h) => h !== host)) {
      const there = this.guestDir(other, name);
      assert.deepEqual(processesIn(there), [], `no process of ${name} on ${other}`);
      assert.equal(existsSync(there), false, `no guest directory of ${name} on ${other}`);
      assert.deepEqual(socketsUnder(there), [], `no socket of ${name} on ${other}`);
    }
    return host;
  }

  /** `ferry migrate NAME --to HOST ARGS --json`: its exit status, events and result line. */
  async migrate(name: string, to: string, args: string[] = []): Promise<CliMigration> {
    return migrateOutput(await ferryAsync(['migrate', name, '--to', to, '--json', ...args], this.env));
  }

  /** One control call to `host`'s agent. */
  async ask<M extends Method>(host: string, method: M, params: Params<M>): Promise<Result<M>> {
    return ask(await loadCluster(this.cluster.file), host, method, params);
  }

  /** The id of the last outgoing migration of `name` that `host`'s agent (since it started) began. */
  lastMigrationId(host: string, name: string): string {
    const started = this.agents[host]!.logs()
      .split('\n')
      .filter((l) => l.includes('"msg":"outgoing migration started"'))
      .map((l) => JSON.parse(l) as { migrationId: string; guest: string })
      .filter((l) => l.guest === name);
    assert.ok(started.length > 0, `${host} logged no migration of ${name}`);
    return started.at(-1)!.migrationId;
  }

  /** Routes the source's connections to `host`'s migration network `index` through `address` (the cluster file's `advertise`). */
  async advertise(host: string, index: number, address: string | null): Promise<{ host: string; port: number }> {
    const doc = parseDocument(await readFile(this.cluster.file, 'utf8'));
    const network = doc.getIn(['hosts', host, 'networks', index]) as {
      get(k: string): unknown;
      set(k: string, v: unknown): void;
      delete(k: string): void;
    };
    const listen = String(network.get('listen'));
    if (address) network.set('advertise', address);
    else network.delete('advertise');
    await writeFile(this.cluster.file, doc.toString());
    return { host: listen.slice(0, listen.lastIndexOf(':')), port: Number(listen.slice(listen.lastIndexOf(':') + 1)) };
  }

  /** SIGKILL to `host`'s agent (its guests and their QEMUs live on). */
  async killAgent(host: string): Promise<void> {
    await this.agents[host]!.stop('SIGKILL');
  }

  /** Every agent that is not running (a test killed it) started again. */
  async restartDeadAgents(): Promise<void> {
    for (const [host, agent] of Object.entries(this.agents))
      if (agent.process.exitCode !== null || agent.process.signalCode !== null) await this.restartAgent(host);
  }

  async restartAgent(host: string, options: { fault?: string } = {}): Promise<RunningAgent> {
    this.agents[host] = await this.cluster.startAgent(host, [], options);
    return this.agents[host];
  }

  /** Every guest destroyed, and whatever of theirs still lives killed (a test that failed may leave a QEMU). */
  async clear(): Promise<void> {
    for (const name of this.uuids.keys()) {
      const hosts = [...(await this.whereabouts(name)).found.keys()];
      // Each host's copy, should a test have left two.
      await eachHost(await loadCluster(this.cluster.file), hosts, (client) =>
        client.call('guest.destroy', { name }, { timeoutMs: 60_000 }),
      ).catch(() => {});
      for (const q of qemusOf(this.uuid(name))) process.kill(q.pid, 'SIGKILL');
    }
    this.uuids.clear();
  }

  /** Agents, guest processes and every QEMU of this cluster killed; its directory removed. */
  async stop(): Promise<void> {
    for (const pid of processesMentioning(this.cluster.root)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await this.cluster.stop();
  }
}
