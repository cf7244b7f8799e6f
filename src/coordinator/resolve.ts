/**
 * `ferry resolve`: settles a migration whose source waits, paused and in doubt, for its
 * destination's decision, when nobody else can. A source asks its destination's agent by itself
 * every few seconds, but it cannot ask a host of another cluster (that cluster's CA does not admit
 * its certificate); while `ferry migrate` follows the move the coordinator relays the answer, and
 * should the coordinator be gone too, this command does the same afterwards.
 *
 * Asking the wrong host would be dangerous: a destination records "not committed" for a migration
 * it does not know, and the source would resume its guest while the real destination may run it.
 * So the host asked must be the one the source recorded when the migration started — same name and
 * same control address — and its certificate must be of the cluster given for it.
 */
import { FerryError } from '../errors.js';
import type { MigrationStreamEvent, ResolveDecision } from '../control/protocol.js';
import type { Cluster } from './cluster.js';
import { connectHost } from './connect.js';
import { locateGuest } from './locate.js';
import { resolveTarget, type Target } from './target.js';

export interface ResolveRequest {
  cluster: Cluster;
  guest: string;
  /** Where the migration went (`--to` as migrate takes it). Default: the host the source recorded, in this cluster. */
  to?: Target;
  /**
   * The operator has made sure the destination can no longer run the guest (powered off, its disk
   * gone): settle "not committed by operator decision" at the source without the destination's
   * answer, unless it answers after all. Only with `destinationGoneConfirmed`.
   */
  destinationLost?: boolean;
  destinationGoneConfirmed?: boolean;
  /** Each event of a migration followed to its end (a guest still `migrating`). */
  onEvent?: (e: MigrationStreamEvent) => void;
}

export interface ResolveReport {
  type: 'result';
  ok: true;
  vm: string;
  migrationId: string;
  from: string;
  to: string;
  decision: ResolveDecision;
  /** Who settled it: the destination's recorded decision, the migration's own end (followed), or the operator's fence. */
  settledBy: 'destination' | 'migration' | 'operator';
  /** Where the guest runs now: the destination when committed, else the source. */
  runsOn: string;
}

/** How long a fence waits for a destination said to be gone to answer after all (then its answer is used instead). */
const LOST_DESTINATION_ANSWER_MS = 3000;

/** The refusal of `--destination-lost` without its confirmation, and why. */
export function unconfirmedFence(guest: string): FerryError {
  return new FerryError(
    'ERR_FERRY_USAGE',
    `--destination-lost resumes guest "${guest}" on its source without the destination's answer; if the destination still runs ` +
      `its copy, or runs it later, the guest runs twice, two copies writing diverging state. Power the destination off (or make sure ` +
      `it can never run the guest again), then repeat with --i-have-powered-off-the-destination`,
  );
}

export async function resolveGuest(req: ResolveRequest): Promise<ResolveReport> {
  if (req.destinationLost && !req.destinationGoneConfirmed) throw unconfirmedFence(req.guest);
  const { host: from, guest } = await locateGuest(req.cluster, req.guest);
  if (guest.state === 'migrating' && !req.destinationLost) return followToEnd(req, from);
  if (guest.state !== 'in-doubt') {
    throw new FerryError(
      'ERR_FERRY_REFUSED',
      `guest "${req.guest}" is ${guest.state} on ${from}, not ${req.destinationLost ? 'paused in doubt' : 'waiting in doubt'}: nothing to resolve`,
    );
  }
  const source = await connectHost(req.cluster, from);
  try {
    const waiting = await source.call('migration.waiting', { guest: req.guest });
    const recorded = waiting.destination;
    const target = req.to ?? (await resolveTarget(req.cluster, recorded.host));
    if (target.host.name !== recorded.host || target.host.control !== recorded.control) {
      const hint = req.to === undefined ? ': name its cluster file with --to CLUSTER_FILE:HOST' : '';
      throw new FerryError(
        'ERR_FERRY_USAGE',
        `migration ${waiting.migrationId} went to host "${recorded.host}" at ${recorded.control}, not to ${target.label} at ${target.host.control}${hint}`,
      );
    }
    const report = (decision: ResolveDecision, settledBy: ResolveReport['settledBy']): ResolveReport => ({
      type: 'result',
      ok: true,
      vm: req.guest,
      migrationId: waiting.migrationId,
      from,
      to: target.label,
      decision,
      settledBy,
      runsOn: decision === 'committed' ? target.label : from,
    });
    let decision: ResolveDecision;
    try {
      decision = await askDestination(target, waiting.migrationId, req.destinationLost ? LOST_DESTINATION_ANSWER_MS : undefined);
    } catch (err) {
      if (!req.destinationLost) throw err;
      // Gone, as the operator says: the source records the fence, then resumes the guest.
      await source.call('migration.fence', { migrationId: waiting.migrationId });
      return report('not-committed', 'operator');
    }
    await source.call('migration.settle', { migrationId: waiting.migrationId, decision });
    return report(decision, 'destination');
  } finally {
    source.close();
  }
}

async function askDestination(target: Target, migrationId: string, timeoutMs?: number): Promise<ResolveDecision> {
  const destination = await connectHost(target.cluster, target.host.name, undefined, timeoutMs);
  try {
    return (await destination.call('migration.resolve', { migrationId }, timeoutMs ? { timeoutMs } : {})).decision;
  } finally {
    destination.close();
  }
}

/** A guest still migrating: its migration followed at the source to its end. */
async function followToEnd(req: ResolveRequest, from: string): Promise<ResolveReport> {
  const source = await connectHost(req.cluster, from);
  try {
    const m = await source.call('migration.outgoing', { guest: req.guest });
    const end = await source.call(
      'migration.follow',
      { migrationId: m.migrationId },
      { timeoutMs: null, ...(req.onEvent ? { onEvent: req.onEvent } : {}) },
    );
    if (end.outcome === 'in-doubt') {
      throw new FerryError(
        'ERR_FERRY_ABORTED',
        `migration ${m.migrationId} is in doubt and host ${from}'s agent is stopping: ask again once it is back`,
      );
    }
    const decision: ResolveDecision = end.outcome === 'committed' ? 'committed' : 'not-committed';
    return {
      type: 'result',
      ok: true,
      vm: req.guest,
      migrationId: m.migrationId,
      from,
      to: m.destination.host,
      decision,
      settledBy: 'migration',
      runsOn: decision === 'committed' ? m.destination.host : from,
    };
  } finally {
    source.close();
  }
}
