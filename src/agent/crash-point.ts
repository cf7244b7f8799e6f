/**
 * Named crash points for fault tests: with FERRY_FAULT=POINT in its environment, the agent SIGKILLs
 * itself when it reaches POINT, leaving exactly the state a power cut there would leave. Unset (as
 * in every real deployment) a crash point does nothing.
 *
 *   destination:before-commit-record  ready to commit, nothing recorded yet
 *   destination:after-commit-record   the commit recorded durably, the guest not yet run
 */
export function crashPoint(point: string): void {
  if (process.env.FERRY_FAULT === point) process.kill(process.pid, 'SIGKILL');
}
