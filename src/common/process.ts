/** Is a process still there, and waiting until it is not; which ones mention a path. Linux: a zombie counts as gone. */
import { readdirSync, readFileSync } from 'node:fs';
import { sleep } from './async.js';

/** True while `pid` runs (or exists under another user); false once it has exited, even unreaped. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Resolves true once `pid` is gone, false if it still runs after `timeoutMs`. */
export async function waitProcessGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (let wait = 2; processAlive(pid); wait = Math.min(wait * 2, 50)) {
    if (performance.now() >= deadline) return false;
    await sleep(wait);
  }
  return true;
}

/** Pids of live processes whose command line (its arguments joined) mentions `text`. */
export function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(text) && processAlive(Number(p))) pids.push(Number(p));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}
