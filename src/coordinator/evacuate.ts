/**
 * Evacuation: every guest off a host. The plan comes from planEvacuation over what the hosts say
 * now (capabilities: encryption, free memory, passthrough NIC) and the source's guests; then at
 * most `concurrency` migrations run at once, the rest wait their turn in plan order (largest first).
 */
import { FerryError, toFerryError } from '../errors.js';
import type { Capabilities, GuestInfo } from '../control/protocol.js';
import type { EncryptedMigration } from '../guest/types.js';
import { clusterHost, type Cluster } from './cluster.js';
import { connectHost, eachHost } from './connect.js';
import { migrateGuest, type CoordinatorEvent, type MigrateHooks, type MigrateRequest, type MigrationSummary } from './migrate.js';
import { planEvacuation, type Placement } from './placement.js';

export interface EvacuationPlan {
  host: string;
  placements: Placement[];
  /** Target hosts that did not answer, with why: left out of the plan. */
  unreachable: { host: string; error: string }[];
}

/** Guests in these states can move; any other (arriving, in doubt, leaving) stays and is reported. */
const MOVABLE = new Set(['running', 'paused']);

export async function planHostEvacuation(
  cluster: Cluster,
  host: string,
  to: readonly string[] | null,
  mode?: EncryptedMigration,
): Promise<EvacuationPlan> {
  clusterHost(cluster, host);
  const targets = to ?? [...cluster.hosts.keys()].filter((h) => h !== host);
  for (const t of targets) {
    clusterHost(cluster, t);
    if (t === host) throw new FerryError('ERR_FERRY_USAGE', `--to: ${host} is the host being evacuated`);
  }
  if (targets.length === 0) throw new FerryError('ERR_FERRY_INPUT', `${cluster.file} has no host but ${host} to move its guests to`);

  const source = await connectHost(cluster, host);
  let caps: Capabilities;
  let guests: GuestInfo[];
  try {
    caps = await source.call('capabilities', {});
    guests = (await source.call('guest.list', {})).guests;
  } finally {
    source.close();
  }
  const answers = await eachHost(cluster, targets, (client) => client.call('capabilities', {}));
  const reachable: Capabilities[] = [];
  const unreachable: EvacuationPlan['unreachable'] = [];
  for (const [name, outcome] of answers) {
    if (outcome.ok) reachable.push(outcome.value);
    else unreachable.push({ host: name, error: outcome.error.message });
  }
  const movable = guests.filter((g) => MOVABLE.has(g.state));
  const placements = planEvacuation(
    { name: host, encrypts: caps.encrypts },
    movable,
    reachable.map((c) => ({
      name: c.host,
      encrypts: c.encrypts,
      freeMemoryBytes: c.freeMemoryBytes,
      ...(c.memoryReserveBytes === undefined ? {} : { memoryReserveBytes: c.memoryReserveBytes }),
      hasSriov: c.hasSriov,
    })),
    mode,
  );
  for (const g of guests.filter((x) => !MOVABLE.has(x.state))) placements.push({ guest: g.name, to: null, reason: `it is ${g.state}` });
  return { host, placements, unreachable };
}

export interface EvacuationOutcome {
  vm: string;
  to: string | null;
  summary: MigrationSummary | null;
  /** Why it was not moved (no place, or its migration failed). */
  error: { code: string; message: string } | null;
}

/** What an evacuation tells its caller besides each migration's own events. */
export type EvacuationEvent =
  | CoordinatorEvent
  | { type: 'queued'; vm: string; side: 'coordinator'; position: number }
  | { type: 'begin'; vm: string; to: string; running: number }
  | {
      type: 'end';
      vm: string;
      ok: boolean;
      running: number;
      result: MigrationSummary['report'] | null;
      error: { code: string; message: string } | null;
    };

export async function runEvacuation(
  cluster: Cluster,
  plan: EvacuationPlan,
  concurrency: number,
  base: Omit<MigrateRequest, 'guest' | 'cluster' | 'to' | 'from'>,
  hooks: Omit<MigrateHooks, 'onEvent'> & { onEvent?: (e: EvacuationEvent) => void } = {},
): Promise<EvacuationOutcome[]> {
  const emit = hooks.onEvent ?? (() => {});
  const outcomes = new Map<string, EvacuationOutcome>();
  const work = plan.placements.filter((p): p is Extract<Placement, { to: string }> => p.to !== null);
  for (const p of plan.placements) {
    if (p.to === null)
      outcomes.set(p.guest, {
        vm: p.guest,
        to: null,
        summary: null,
        error: { code: 'ERR_FERRY_REFUSED', message: `no place for it: ${p.reason}` },
      });
  }
  work.forEach((p, i) => {
    if (i >= concurrency) emit({ type: 'queued', vm: p.guest, side: 'coordinator', position: i - concurrency + 1 });
  });
  let next = 0;
  let running = 0;
  const since = performance.now();
  const worker = async () => {
    while (next < work.length) {
      const i0 = next;
      const p = work[next++]!;
      running++;
      emit({ type: 'begin', vm: p.guest, to: p.to, running });
      let outcome: EvacuationOutcome;
      try {
        const summary = await migrateGuest(
          {
            ...base,
            // The wait in this queue, beside any at the agents.
            queuedMs: i0 >= concurrency ? Math.round(performance.now() - since) : 0,
            guest: p.guest,
            cluster,
            from: plan.host,
            to: { cluster, host: clusterHost(cluster, p.to), crossCluster: false, label: p.to },
          },
          { ...hooks, onEvent: emit },
        );
        outcome = { vm: p.guest, to: p.to, summary, error: summary.report.error };
      } catch (err) {
        outcome = { vm: p.guest, to: p.to, summary: null, error: toFerryError(err).toJSON() };
      }
      running--;
      outcomes.set(p.guest, outcome);
      emit({
        type: 'end',
        vm: p.guest,
        ok: outcome.error === null,
        running,
        result: outcome.summary?.report ?? null,
        error: outcome.error,
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, work.length) }, worker));
  return plan.placements.map((p) => outcomes.get(p.guest)!);
}
