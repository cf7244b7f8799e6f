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
import { waitUntil } from './wait.js';

export class GuestSandbox {
  readonly root = mkdtempSync(join(tmpdir(), 'ferry-guest-'));
  private n = 0;

  dir(name = 'g'): string {
    return join(this.root, `${name}${this.n++}`);
  }

  config(workload: Workload, memoryMiB = 64, diskMiB = 0, name = 'test-guest'): GuestConfig {
    return {
      name,
      driver: 'synthetic',
      memoryBytes: memoryMiB * 2 ** 20,
      diskBytes: diskMiB * 2 ** 20,
      workload,
      nic: 'virtio',
      encryptedMigration: 'opportunistic',
    };
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

/** `g` once its workload has set up (the idle fill, the kv preload): what a migration test moves. */
export async function workloadReady(g: GuestClient): Promise<GuestClient> {
  await waitUntil(async () => (await g.status()).workloadReady, 20_000, 'workload setup');
  return g;
}
