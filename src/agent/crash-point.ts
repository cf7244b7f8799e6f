/**
 * Named crash points for fault tests: with FERRY_FAULT=POINT in its environment, the agent SIGKILLs
 * itself when it reaches POINT, leaving exactly the state a power cut there would leave; with
 * FERRY_FAULT=POINT@stop it SIGSTOPs itself there. Unset (as in every real deployment) a crash
 * point does nothing.
 *
 *   source:after-outgoing-record      where the guest goes recorded, its guest process not yet told
 *   source:in-precopy                 the first pass under way (its first pass event)
 *   source:at-switch-over             the guest paused for the switch-over, COMPLETE not yet known here
 *   source:before-handoff-record      COMMITTED arrived, the hand-off not yet recorded
 *   source:after-handoff-record       the hand-off recorded, the source's guest process not yet finished
 *   destination:after-incoming-record the source's address recorded, the incoming guest not yet started
 *   destination:in-precopy            pages arriving (the incoming guest's first progress event)
 *   destination:before-commit-record  ready to commit, nothing recorded yet
 *   destination:after-commit-record   the commit recorded durably, the guest not yet run
 */
export const CRASH_POINTS = [
  'source:after-outgoing-record',
  'source:in-precopy',
  'source:at-switch-over',
  'source:before-handoff-record',
  'source:after-handoff-record',
  'destination:after-incoming-record',
  'destination:in-precopy',
  'destination:before-commit-record',
  'destination:after-commit-record',
] as const;

/** Each point strikes once per process: a migration passes some of them many times. */
const struck = new Set<string>();

export function crashPoint(point: string): void {
  const fault = process.env.FERRY_FAULT;
  if (fault === undefined || struck.has(point)) return;
  struck.add(point);
  if (fault === point) process.kill(process.pid, 'SIGKILL');
  // Frozen there instead, for a test to strike something else at that moment and SIGCONT it.
  else if (fault === `${point}@stop`) process.kill(process.pid, 'SIGSTOP');
}
