/**
 * A throwaway cluster on 127.0.0.1 for `ferry demo`: a temporary directory with a CA, hosts, and
 * their agents as child processes of this CLI. close() undoes all of it — agents stopped, every
 * guest process they started killed, the directory removed — and is safe to call twice, from a
 * signal handler and from a finally block at once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FerryError } from '../errors.js';
import { initPki } from '../coordinator/pki.js';
import { loadCluster, type Cluster } from '../coordinator/cluster.js';
import { DEFAULT_LIMITS } from '../agent/state.js';
import { PID_FILE, QEMU_PID_FILE } from '../guest/index.js';
import { initHost } from './commands/host-init.js';
import { freePort } from './free-port.js';

const BIN = fileURLToPath(new URL('../../bin/ferry', import.meta.url));
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;

interface LocalAgent {
  name: string;
  dir: string;
  child: ChildProcess;
  exited: Promise<void>;
  log: string;
}

export class LocalCluster {
  readonly root: string;
  private readonly agents: LocalAgent[] = [];
  private closing: Promise<void> | null = null;

  private constructor(root: string) {
    this.root = root;
  }

  static create(): LocalCluster {
    return new LocalCluster(mkdtempSync(path.join(os.tmpdir(), 'ferry-demo-')));
  }

  get clusterFile(): string {
    return path.join(this.root, 'pki', 'cluster.yaml');
  }

  /** The CA, and one host per name with its agent running. */
  async start(hosts: readonly string[]): Promise<Cluster> {
    await initPki(path.join(this.root, 'pki'));
    for (const name of hosts) {
      const network = `127.0.0.1:${await freePort()}`;
      const config = {
        name,
        control: `127.0.0.1:${await freePort()}`,
        networks: [{ listen: network, advertise: network }],
        hasSriov: false,
        limits: DEFAULT_LIMITS,
      };
      await initHost(await loadCluster(this.clusterFile), config, path.join(this.root, `host-${name}`));
    }
    await Promise.all(hosts.map((h) => this.startAgent(h)));
    return loadCluster(this.clusterFile);
  }

  /** The running agent of host `name` (the newest started), or null. */
  agent(name: string): { pid: number; dir: string } | null {
    const a = this.agents.filter((x) => x.name === name).at(-1);
    return a && a.child.exitCode === null && a.child.signalCode === null && a.child.pid !== undefined
      ? { pid: a.child.pid, dir: a.dir }
      : null;
  }

  /** Kills host `name`'s agent with `signal` and waits until it has exited (its guests run on). */
  async killAgent(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const a = this.agents.filter((x) => x.name === name).at(-1);
    if (!a || a.child.exitCode !== null || a.child.signalCode !== null) return;
    a.child.kill(signal);
    await a.exited;
  }

  /** Starts host `name`'s agent again (after killAgent): resolves once it is ready. */
  restartAgent(name: string): Promise<void> {
    return this.startAgent(name);
  }

  private startAgent(name: string): Promise<void> {
    if (this.closing) return Promise.reject(new FerryError('ERR_FERRY_ABORTED', 'the demo is stopping'));
    const dir = path.join(this.root, `host-${name}`);
    const child = spawn(process.execPath, [BIN, 'host', 'serve', '--dir', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    const agent: LocalAgent = { name, dir, child, log: '', exited: new Promise((r) => child.once('exit', () => r())) };
    this.agents.push(agent);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new FerryError('ERR_FERRY_TIMEOUT', `the agent of host ${name} was not ready within ${READY_TIMEOUT_MS / 1000} s`)),
        READY_TIMEOUT_MS,
      );
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (chunk: string) => {
        agent.log += chunk;
        if (agent.log.includes('"msg":"agent ready"')) {
          clearTimeout(timer);
          resolve();
        }
      });
      void agent.exited.then(() => {
        clearTimeout(timer);
        const last = agent.log.trim().split('\n').pop() ?? '';
        reject(new FerryError('ERR_FERRY_INTERNAL', `the agent of host ${name} exited before it was ready: ${last}`));
      });
    });
  }

  /**
   * The agents' warning and error lines so far, one per line as `host: msg (fields)`: what to show
   * when a migration of the demo or a benchmark fails (e.g. why a data connection was dropped).
   */
  warnings(): string[] {
    const lines: string[] = [];
    for (const a of this.agents) {
      for (const raw of a.log.split('\n')) {
        let entry: Record<string, unknown>;
        try {
          entry = JSON.parse(raw) as Record<string, unknown>;
        } catch {
          continue;
        }
        if (entry.level !== 'warn' && entry.level !== 'error') continue;
        const { time: _t, level: _l, msg, ...fields } = entry;
        lines.push(`${a.name}: ${String(msg)} ${JSON.stringify(fields)}`);
      }
    }
    return lines;
  }

  /**
   * The pids of the guest processes the agents started and of the QEMUs those run (from the pid
   * files in the guest directories), each only while its command line names this cluster's
   * directory: a pid file left behind may name a pid the system has given to another process since.
   */
  private guestPids(): number[] {
    const pids: number[] = [];
    for (const a of this.agents) {
      const guests = path.join(a.dir, 'guests');
      for (const g of existsSync(guests) ? readdirSync(guests) : []) {
        for (const file of [PID_FILE, QEMU_PID_FILE]) {
          const pidFile = path.join(guests, g, file);
          const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : NaN;
          if (Number.isSafeInteger(pid) && pid > 1 && this.mentionsRoot(pid)) pids.push(pid);
        }
      }
    }
    return pids;
  }

  private mentionsRoot(pid: number): boolean {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(this.root);
    } catch {
      return false;
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.all(
        this.agents.map(async (a) => {
          if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGTERM');
          const killer = setTimeout(() => a.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
          await a.exited;
          clearTimeout(killer);
        }),
      );
      // Guests outlive their agents by design: these are the demo's own, so they go too.
      for (const pid of this.guestPids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      rmSync(this.root, { recursive: true, force: true });
    })();
    return this.closing;
  }
}
