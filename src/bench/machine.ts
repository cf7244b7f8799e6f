/**
 * The machine a benchmark ran on, for its result file: figures of two runs compare only on the same
 * kind of machine, and only as ratios measured in one run.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { cpuFeatures } from '../crypto/index.js';

export interface Machine {
  cpu: string;
  /** /proc/cpuinfo's flags of the first CPU. */
  cpuFlags: string[];
  /** What ferry's addon found the CPU to have (AES-NI, VAES, ...); null without the addon. */
  cryptoFeatures: ReturnType<typeof cpuFeatures>;
  cores: number;
  memoryBytes: number;
  kernel: string;
  node: string;
  /** The OpenSSL inside Node, and the `openssl` command's. */
  nodeOpenssl: string;
  openssl: string | null;
}

function cpuinfo(): { model: string; flags: string[] } {
  try {
    const text = readFileSync('/proc/cpuinfo', 'utf8');
    return {
      model: /^model name\s*:\s*(.*)$/m.exec(text)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown',
      flags: (/^flags\s*:\s*(.*)$/m.exec(text)?.[1] ?? '').trim().split(/\s+/).filter(Boolean),
    };
  } catch {
    return { model: os.cpus()[0]?.model ?? 'unknown', flags: [] };
  }
}

/** The first line a command prints for its version, or null when it does not run. */
export function versionLine(command: string, args: string[] = ['--version']): string | null {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) return null;
  return r.stdout.split('\n')[0]!.trim() || null;
}

export function describeMachine(): Machine {
  const { model, flags } = cpuinfo();
  return {
    cpu: model,
    cpuFlags: flags,
    cryptoFeatures: cpuFeatures(),
    cores: os.availableParallelism(),
    memoryBytes: os.totalmem(),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    nodeOpenssl: process.versions.openssl ?? 'unknown',
    openssl: versionLine('openssl', ['version']),
  };
}

/** MemAvailable from /proc/meminfo (os.freemem() leaves out the page cache that can be dropped). */
export function availableMemory(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) * 1024 : os.freemem();
}
