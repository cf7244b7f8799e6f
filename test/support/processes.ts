/** The processes a test started: are they alive, in which state, and which mention a test's unique temp dir. */
import { readFileSync } from 'node:fs';

/** `alive(pid)`: a zombie (exited, not yet reaped: its parent was killed) is not. */
export { processAlive as alive, processesMentioning } from '../../src/common/process.js';

/** The state letter /proc gives process `pid` (R, S, D, T when stopped, Z), or 'gone'. */
export function processState(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return 'gone';
  }
}
