/**
 * One QEMU process of a guest: started detached (QEMU's own -daemonize: it forks, leaves the
 * session, writes its pid file and only then lets the starter go, so a failed start is an exit
 * status with QEMU's words on stderr), adopted again by pid file and QMP after the ferry process
 * that started it died, and stopped. QEMU outlives every ferry process; only quit or a kill ends it.
 */
import { spawn } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { FerryError } from '../../errors.js';
import { sleep } from '../../common/async.js';
import { processAlive } from '../../common/process.js';
import type { QemuConfig } from '../types.js';
import { hostArgv, QEMU_PID_FILE, QMP_SOCKET } from './argv.js';
import { resolveQemu } from './probe.js';
import { QmpClient } from './qmp.js';

/** How long QEMU may take to start (a large guest's memory is not touched at start), and to quit. */
const START_TIMEOUT_MS = 60_000;
const QUIT_TIMEOUT_MS = 10_000;

export class Qemu {
  private constructor(
    readonly pid: number,
    readonly qmp: QmpClient,
    readonly dir: string,
  ) {}

  /** Starts this guest's QEMU in `dir` (its boot files in place); `incoming`: paused, waiting for a migration. */
  static async start(config: QemuConfig, dir: string, options: { incoming?: boolean } = {}): Promise<Qemu> {
    const { executable, missing } = resolveQemu();
    if (!executable) throw new FerryError('ERR_FERRY_QEMU', `cannot start guest ${config.name}: ${missing}`);
    const argv = hostArgv(config, dir, options);
    await fs.rm(path.join(dir, QEMU_PID_FILE), { force: true });
    const stderr = await new Promise<string>((resolve, reject) => {
      const child = spawn(executable, argv, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir });
      let text = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (text = (text + d).slice(-4000)));
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new FerryError('ERR_FERRY_TIMEOUT', `QEMU for guest ${config.name} did not start within ${START_TIMEOUT_MS} ms`));
      }, START_TIMEOUT_MS);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new FerryError('ERR_FERRY_QEMU', `cannot run ${executable}: ${err.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) resolve(text);
        else
          reject(
            new FerryError(
              'ERR_FERRY_QEMU',
              `QEMU refused to start guest ${config.name} (${signal ?? `exit ${code}`}): ${lastLines(text) || 'no message'}`,
            ),
          );
      });
    });
    const pid = readPid(dir);
    if (pid === null)
      throw new FerryError(
        'ERR_FERRY_QEMU',
        `QEMU started guest ${config.name} but wrote no pid file${stderr ? `: ${lastLines(stderr)}` : ''}`,
      );
    try {
      return new Qemu(pid, await QmpClient.connect(path.join(dir, QMP_SOCKET)), dir);
    } catch (err) {
      killHard(pid);
      throw err;
    }
  }

  /** The QEMU already running this guest in `dir`, or null when none does. */
  static async adopt(config: QemuConfig, dir: string): Promise<Qemu | null> {
    const pid = readPid(dir);
    if (pid === null || !isQemuOf(pid, config)) return null;
    return new Qemu(pid, await QmpClient.connect(path.join(dir, QMP_SOCKET)), dir);
  }

  /** True while the process lives. */
  get alive(): boolean {
    return processAlive(this.pid);
  }

  /** Resolves once the QEMU process is gone (polled: it is not our child). */
  async exited(pollMs = 50): Promise<void> {
    while (processAlive(this.pid)) await sleep(pollMs);
  }

  /** Ends QEMU: `quit` over QMP, then SIGKILL if it lingers. The guest's memory is gone. */
  async stop(): Promise<void> {
    if (!processAlive(this.pid)) return;
    await this.qmp.quit({ timeoutMs: QUIT_TIMEOUT_MS }).catch(() => {});
    const deadline = performance.now() + QUIT_TIMEOUT_MS;
    while (processAlive(this.pid) && performance.now() < deadline) await sleep(50);
    if (processAlive(this.pid)) {
      killHard(this.pid);
      while (processAlive(this.pid)) await sleep(20);
    }
    await this.qmp.close();
  }

  /** Kills QEMU at once (a destination giving up: its copy must never run). */
  async kill(): Promise<void> {
    killHard(this.pid);
    while (processAlive(this.pid)) await sleep(20);
    await this.qmp.close();
  }
}

/**
 * Kills this guest's QEMU in `dir` if one still runs there without its guest process (that
 * process killed while it held a paused incoming copy, say), and waits until it is gone.
 */
export async function killLeftQemu(dir: string, config: QemuConfig): Promise<boolean> {
  const pid = readPid(dir);
  if (pid === null || !processAlive(pid) || !isQemuOf(pid, config)) return false;
  killHard(pid);
  while (processAlive(pid)) await sleep(20);
  return true;
}

/** Is this guest's QEMU running in `dir` (its pid file names a live QEMU with the guest's uuid)? */
export function qemuRuns(dir: string, config: QemuConfig): boolean {
  const pid = readPid(dir);
  return pid !== null && processAlive(pid) && isQemuOf(pid, config);
}

function lastLines(text: string): string {
  return text.trim().split('\n').slice(-3).join(' | ');
}

function readPid(dir: string): number | null {
  try {
    const n = Number(readFileSync(path.join(dir, QEMU_PID_FILE), 'utf8').trim());
    return Number.isSafeInteger(n) && n > 1 ? n : null;
  } catch {
    return null;
  }
}

/** Is `pid` this guest's QEMU (its command line names the guest's uuid), not a recycled pid? */
function isQemuOf(pid: number, config: QemuConfig): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const i = argv.indexOf('-uuid');
    return i >= 0 && argv[i + 1] === config.uuid;
  } catch {
    return false;
  }
}

function killHard(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone already
  }
}
