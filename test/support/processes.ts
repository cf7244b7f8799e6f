/** The processes a test started: are they alive, and which mention a test's unique temp dir. */
import { readFileSync } from 'node:fs';

export { processesMentioning } from '../../src/common/process.js';

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
