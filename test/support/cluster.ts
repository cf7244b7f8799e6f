/**
 * Real clusters for tests: `ferry pki init` and `ferry host init` run as the CLI, agents run as
 * `node bin/ferry host serve` child processes on 127.0.0.1, in a unique temporary directory that
 * stop() removes. Every agent started is killed by stop(), also when a test fails.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../src/cli/free-port.js';

/** Ports below the kernel's ephemeral range, so host init can write them into files (src/cli/free-port.ts). */
export { freePort };

export const BIN = fileURLToPath(new URL('../../bin/ferry', import.meta.url));

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function ferry(args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The CLI as a child process, without blocking this one (for a test that serves or watches it meanwhile). */
export function ferryAsync(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** Runs the CLI and throws with its stderr unless it exits 0. */
export function ferryOk(args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  const r = ferry(args, env);
  if (r.status !== 0) throw new Error(`ferry ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r;
}


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
    const args = ['host', 'init', name, '--dir', this.hostDir(name), '--control', `127.0.0.1:${await freePort()}`, '--network', networks.join(',')];
    if (options.sriov) args.push('--sriov');
    if (options.maxOutgoing) args.push('--max-outgoing', String(options.maxOutgoing));
    if (options.maxIncoming) args.push('--max-incoming', String(options.maxIncoming));
    if (options.cryptoThreads) args.push('--crypto-threads', String(options.cryptoThreads));
    ferryOk(args, this.env);
    return this.hostDir(name);
  }

  /** Starts `ferry host serve` for a host made by addHost and waits until it is ready. */
  startAgent(name: string, extraArgs: string[] = []): Promise<RunningAgent> {
    return startAgent(name, this.hostDir(name), extraArgs, this.agents);
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

export function startAgent(name: string, dir: string, extraArgs: string[] = [], registry?: Set<RunningAgent>): Promise<RunningAgent> {
  const child = spawn(process.execPath, [BIN, 'host', 'serve', '--dir', dir, ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const agent: RunningAgent = {
    name,
    dir,
    process: child,
    control: '',
    logs: () => log,
    waitForLog: async (pattern, timeoutMs = 5000) => {
      const deadline = Date.now() + timeoutMs;
      while (!pattern.test(log)) {
        if (Date.now() > deadline) throw new Error(`agent ${name} never logged ${pattern}: ${log}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const code = await exited;
      registry?.delete(agent);
      return code;
    },
  };
  registry?.add(agent);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`agent ${name} not ready in 20 s: ${log}`));
    }, 20_000);
    child.stdout!.on('data', () => {});
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      log += chunk;
      const ready = log.split('\n').find((l) => l.includes('"msg":"agent ready"'));
      if (ready && agent.control === '') {
        agent.control = JSON.parse(ready).control;
        clearTimeout(timer);
        resolve(agent);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`agent ${name} exited (${code}) before it was ready: ${log}`));
    });
  });
}
