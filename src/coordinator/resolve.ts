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
import type { ResolveDecision } from '../control/protocol.js';
import type { Cluster } from './cluster.js';
import { connectHost } from './connect.js';
import { locateGuest } from './locate.js';
import { resolveTarget, type Target } from './target.js';

export interface ResolveRequest {
  cluster: Cluster;
  guest: string;
  /** Where the migration went (`--to` as migrate takes it). Default: the host the source recorded, in this cluster. */
  to?: Target;
}

export interface ResolveReport {
  type: 'result';
  ok: true;
  vm: string;
  migrationId: string;
  from: string;
  to: string;
  decision: ResolveDecision;
  /** Where the guest runs now: the destination when committed, else the source. */
  runsOn: string;
}

export async function resolveGuest(req: ResolveRequest): Promise<ResolveReport> {
  const { host: from, guest } = await locateGuest(req.cluster, req.guest);
  if (guest.state !== 'in-doubt') {
    throw new FerryError(
      'ERR_FERRY_REFUSED',
      `guest "${req.guest}" is ${guest.state} on ${from}, not waiting in doubt: nothing to resolve`,
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
    const destination = await connectHost(target.cluster, target.host.name);
    let decision: ResolveDecision;
    try {
      decision = (await destination.call('migration.resolve', { migrationId: waiting.migrationId })).decision;
    } finally {
      destination.close();
    }
    await source.call('migration.settle', { migrationId: waiting.migrationId, decision });
    return {
      type: 'result',
      ok: true,
      vm: req.guest,
      migrationId: waiting.migrationId,
      from,
      to: target.label,
      decision,
      runsOn: decision === 'committed' ? target.label : from,
    };
  } finally {
    source.close();
  }
}
