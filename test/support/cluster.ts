/**
 * Real clusters for tests: `ferry pki init` and `ferry host init` run as the CLI, agents run as
 * `node bin/ferry host serve` child processes on 127.0.0.1, in a unique temporary directory that
 * stop() removes. Every agent started is killed by stop(), also when a test fails.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../src/cli/free-port.js';
import { ferryOk, startFerry } from './cli.js';

/** Ports below the kernel's ephemeral range, so host init can write them into files (src/cli/free-port.ts). */
export { freePort };

export interface RunningAgent {
  name: string;
  dir: string;
  process: ChildProcess;
  control: string;
  /** Everything the agent logged so far (JSON lines). */
  logs(): string;
  /** Resolves once the log matches `pattern` (logs arrive over a pipe, a little after the fact). */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** SIGTERM, and the exit code (null: killed by a signal). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface HostOptions {
  sriov?: boolean;
  maxOutgoing?: number;
  maxIncoming?: number;
  networks?: number;
  cryptoThreads?: number;
}

export class TestCluster {
  readonly root: string;
  readonly pkiDir: string;
  readonly file: string;
  private readonly agents = new Set<RunningAgent>();

  private constructor(root: string) {
    this.root = root;
    this.pkiDir = path.join(root, 'pki');
    this.file = path.join(this.pkiDir, 'cluster.yaml');
  }

  static create(prefix = 'ferry-test-'): TestCluster {
    const c = new TestCluster(mkdtempSync(path.join(os.tmpdir(), prefix)));
    ferryOk(['pki', 'init', '--dir', c.pkiDir]);
    return c;
  }

  get env(): { FERRY_CLUSTER: string } {
    return { FERRY_CLUSTER: this.file };
  }

  hostDir(name: string): string {
    return path.join(this.root, `host-${name}`);
  }

  async addHost(name: string, options: HostOptions = {}): Promise<string> {
    const networks: string[] = [];
    for (let i = 0; i < (options.networks ?? 1); i++) networks.push(`127.0.0.1:${await freePort()}`);
    const args = [
      'host',
      'init',
      name,
      '--dir',
      this.hostDir(name),
      '--control',
      `127.0.0.1:${await freePort()}`,
      '--network',
      networks.join(','),
    ];
    if (options.sriov) args.push('--sriov');
    if (options.maxOutgoing) args.push('--max-outgoing', String(options.maxOutgoing));
    if (options.maxIncoming) args.push('--max-incoming', String(options.maxIncoming));
    if (options.cryptoThreads) args.push('--crypto-threads', String(options.cryptoThreads));
    ferryOk(args, this.env);
    return this.hostDir(name);
  }

  /**
   * Starts `ferry host serve` for a host made by addHost and waits until it is ready; `fault`: the
   * crash point it strikes (FERRY_FAULT, src/agent/crash-point.ts).
   */
  startAgent(name: string, extraArgs: string[] = [], { fault }: { fault?: string } = {}): Promise<RunningAgent> {
    return startAgent(name, this.hostDir(name), extraArgs, this.agents, fault ? { FERRY_FAULT: fault } : {});
  }

  /** The pids of every guest process of every host of this cluster (from their pid files). */
  guestPids(): number[] {
    const pids: number[] = [];
    for (const host of readdirSync(this.root).filter((d) => d.startsWith('host-'))) {
      const guests = path.join(this.root, host, 'guests');
      for (const g of existsSync(guests) ? readdirSync(guests) : []) {
        const pidFile = path.join(guests, g, 'guest.pid');
        if (existsSync(pidFile)) pids.push(Number(readFileSync(pidFile, 'utf8')));
      }
    }
    return pids;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.agents].map((a) => a.stop('SIGKILL')));
    for (const pid of this.guestPids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(this.root, { recursive: true, force: true });
  }
}

export async function startAgent(
  name: string,
  dir: string,
  extraArgs: string[] = [],
  registry?: Set<RunningAgent>,
  env: NodeJS.ProcessEnv = {},
): Promise<RunningAgent> {
  const child = startFerry(['host', 'serve', '--dir', dir, ...extraArgs], env);
  const agent: RunningAgent = {
    name,
    dir,
    process: child.process,
    control: '',
    logs: child.stderr,
    waitForLog: async (pattern, timeoutMs = 5000) => {
      await child.waitForOutput('stderr', pattern, timeoutMs);
    },
    stop: async (signal = 'SIGTERM') => {
      if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill(signal);
      const code = await child.exited;
      registry?.delete(agent);
      return code;
    },
  };
  registry?.add(agent);
  try {
    const [ready] = await child.waitForOutput('stderr', /^.*"msg":"agent ready".*\n/m, 20_000);
    agent.control = (JSON.parse(ready) as { control: string }).control;
  } catch (err) {
    child.process.kill('SIGKILL');
    throw new Error(`agent ${name} not ready: ${(err as Error).message}`, { cause: err });
  }
  return agent;
}
