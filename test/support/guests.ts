/**
 * Test support for real guest processes: unique temporary directories, small configs, and a
 * cleanup that kills every guest process a suite started (by pid, from its pid file) and removes
 * its directories.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GuestClient } from '../../src/guest/client.js';
import type { GuestConfig, Workload } from '../../src/guest/types.js';

export class GuestSandbox {
  readonly root = mkdtempSync(join(tmpdir(), 'ferry-guest-'));
  private n = 0;

  dir(name = 'g'): string {
    return join(this.root, `${name}${this.n++}`);
  }

  config(workload: Workload, memoryMiB = 64, diskMiB = 0, name = 'test-guest'): GuestConfig {
    return { name, driver: 'synthetic', memoryBytes: memoryMiB * 2 ** 20, diskBytes: diskMiB * 2 ** 20, workload, nic: 'virtio', encryptedMigration: 'opportunistic' };
  }

  /** Kills every guest process whose pid file is under the sandbox, then removes it. */
  cleanup(): void {
    for (const pid of this.pids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(this.root, { recursive: true, force: true });
  }

  pids(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.n; i++) {
      for (const name of ['g', 'src', 'dst']) {
        try {
          out.push(Number(readFileSync(join(this.root, `${name}${i}`, 'guest.pid'), 'utf8')));
        } catch {
          // no guest there
        }
      }
    }
    return out;
  }
}

/** Is `pid` a live process? A zombie (exited, not yet reaped: its parent was killed) is not. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 50 ms until it returns true or `ms` pass. */
export async function waitUntil(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** `g` once its workload has set up (the idle fill, the kv preload): what a migration test moves. */
export async function workloadReady(g: GuestClient): Promise<GuestClient> {
  await waitUntil(async () => (await g.status()).workloadReady, 20_000, 'workload setup');
  return g;
}
