/**
 * The operator's fence (docs/migration.md, "When the destination is lost for good"): a source
 * paused in doubt whose destination can no longer run the guest — the operator has made sure of
 * that — is settled "not committed by operator decision" without the destination's answer.
 *
 * The fence and the destination's commit exclude each other through the source:
 * - the source records the fence durably (ownership/ID.fenced.json) before the guest resumes;
 * - a destination that recorded a commit but has not run it yet (its agent died in between) asks
 *   the source first (`migration.claim`): "not committed" when fenced, and its copy goes; otherwise
 *   the source records the claim (ownership/ID.claimed.json), and from then on refuses a fence;
 * - the source also tells the destination of the fence (`migration.fenced`), until it answers, so
 *   a destination that comes back drops its copy even when it had nothing left to ask.
 * Both records of one migration are written under one lock, so a claim and a fence never both win.
 */
import { FerryError, toFerryError } from '../errors.js';
import type { Peer, ResolveDecision } from '../control/protocol.js';
import { sleep } from '../common/async.js';
import { KeyedLock } from '../common/keyed-lock.js';
import type { MigrationHost, MigrationRecords } from './migration-records.js';
import type { ResolveQueries } from './resolve-query.js';
import { askAgent } from './agent-call.js';

/** Waits between attempts to tell a host what the operator decided: 1 s, doubling, at most 10 s. */
const TELL_BACKOFF_MS = [1000, 2000, 4000, 8000, 10_000];

type Place = { host: string; control: string };

/** The source's side: the fence itself, and the answer to a destination's claim. */
export class SourceFences {
  private readonly lock = new KeyedLock();
  private stopped = false;

  constructor(
    private readonly host: MigrationHost,
    private readonly records: MigrationRecords,
    private readonly queries: ResolveQueries,
  ) {}

  /** Fences migration `migrationId`, waiting in doubt here; resolves once the guest runs here again. */
  async fence(migrationId: string): Promise<void> {
    const m = this.records.get(migrationId);
    if (!m || m.role !== 'source' || m.phase !== 'in-doubt' || !this.queries.waiting(migrationId)) {
      throw new FerryError(
        'ERR_FERRY_REFUSED',
        `migration "${migrationId}" is not waiting in doubt on host ${this.host.state.config.name}: only a source paused in doubt can be fenced`,
      );
    }
    await this.lock.run(migrationId, async () => {
      if (await this.host.state.settled('claimed', migrationId)) {
        throw new FerryError(
          'ERR_FERRY_REFUSED',
          `host ${m.destination.host} has claimed its commit of migration ${migrationId}: the guest is its, and the source's copy stops once it is told`,
        );
      }
      await this.queries.fence(migrationId, () => this.host.state.settle('fenced', migrationId, m.guest));
    });
    this.host.log.warn('migration fenced by the operator: not committed, the guest resumes here', {
      migrationId,
      guest: m.guest,
      destination: m.destination.host,
    });
    await m.ended;
    void this.tellDestination(migrationId, m.destination);
  }

  /**
   * A restarted destination's decision for a migration its previous agent left. `peer` must be the
   * host this migration went to. "committed" is a claim of a commit not yet run: it stands unless
   * the operator fenced first, and once recorded no fence is accepted.
   */
  async decided(migrationId: string, decision: ResolveDecision, peer: Peer): Promise<ResolveDecision> {
    const { destination, guest } = await this.host.state.readOutgoing(migrationId);
    if (peer.role !== 'host' || peer.name !== destination.host) {
      throw new FerryError('ERR_FERRY_REFUSED', `migration "${migrationId}" did not go to ${peer.name}: only its destination decides it`);
    }
    return this.lock.run(migrationId, async () => {
      if (await this.host.state.settled('fenced', migrationId)) return 'not-committed';
      if (decision === 'committed' && (await this.liveHere(guest, migrationId))) {
        // Only a fence resumes a source whose destination recorded a commit; the guest runs here, so
        // one was made and its record is gone (this state directory restored from before it). It
        // is written again; the claim is refused, and the destination drops its copy.
        await this.host.state.settle('fenced', migrationId, guest);
        this.host.log.warn('refused the claim of a commit: the guest runs here, so the migration was fenced; the fence is recorded again', {
          migrationId,
          guest,
          destination: destination.host,
        });
        return 'not-committed';
      }
      if (decision === 'committed') await this.host.state.settle('claimed', migrationId, guest);
      // A source still waiting in doubt acts on it now, not at its next resolve query.
      if (this.queries.waiting(migrationId)) this.queries.relay(migrationId, decision);
      this.host.log.info('the destination told its decision', { migrationId, guest, destination: destination.host, decision });
      return decision;
    });
  }

  /**
   * Whether this host's copy of the guest is live apart from migration `migrationId`: running or
   * paused, or in another migration. A source still paused in doubt for this one (or handing over,
   * or gone) is not.
   */
  private async liveHere(guest: string, migrationId: string): Promise<boolean> {
    const client = await this.host.guests.client(guest).catch(() => null);
    const status = client ? await client.status().catch(() => null) : null;
    if (!client || !status) return false;
    if (status.state === 'running' || status.state === 'paused') return true;
    if (status.state !== 'migrating' && status.state !== 'in-doubt') return false;
    const info = await client.migration().catch(() => null);
    return info !== null && info.migrationId !== migrationId;
  }

  /** Tells the destination of the fence until it answers (or this agent stops). */
  private async tellDestination(migrationId: string, destination: Place): Promise<void> {
    for (let attempt = 1; !this.stopped; attempt++) {
      try {
        const { dropped } = await askAgent(this.host, destination, (client) => client.call('migration.fenced', { migrationId }));
        this.host.log.info('the destination learnt of the fence', { migrationId, destination: destination.host, dropped });
        return;
      } catch (err) {
        this.host.log.warn('cannot tell the destination of the fence yet', { migrationId, attempt, error: toFerryError(err).message });
      }
      await sleep(TELL_BACKOFF_MS[Math.min(attempt - 1, TELL_BACKOFF_MS.length - 1)]!);
    }
  }

  stop(): void {
    this.stopped = true;
  }
}

/**
 * The destination's side, before it runs a commit its previous agent recorded but did not run:
 * the source's answer to that claim, asked until it comes. True: run it; false: the operator
 * fenced it (recorded here too), drop it. A migration whose source was not noted (another cluster,
 * an older coordinator) runs as before.
 */
export async function claimFromSource(host: MigrationHost, migrationId: string, isStopped: () => boolean): Promise<boolean> {
  const note = await host.state.readIncoming(migrationId);
  if (!note) return true;
  for (let attempt = 1; ; attempt++) {
    try {
      const { decision } = await askAgent(host, note.source, (client) =>
        client.call('migration.decided', { migrationId, decision: 'committed' }),
      );
      if (decision === 'committed') return true;
      await host.state.settle('fenced', migrationId, note.guest);
      return false;
    } catch (err) {
      if (isStopped()) throw new FerryError('ERR_FERRY_ABORTED', 'the agent is stopping; the next one asks the source');
      host.log.warn('cannot ask the source before running a left commit; the guest stays paused', {
        migrationId,
        source: note.source.host,
        attempt,
        error: toFerryError(err).message,
      });
    }
    await sleep(TELL_BACKOFF_MS[Math.min(attempt - 1, TELL_BACKOFF_MS.length - 1)]!);
  }
}

/**
 * A restarted destination dropped what its previous agent left ("not committed"): it tells the
 * source, which may wait in doubt, at once (best effort: the source asks by itself anyway).
 */
export function tellSourceDropped(host: MigrationHost, migrationId: string): void {
  void (async () => {
    const note = await host.state.readIncoming(migrationId);
    if (!note) return;
    await askAgent(host, note.source, (client) => client.call('migration.decided', { migrationId, decision: 'not-committed' }));
  })().catch((err) =>
    host.log.info('could not tell the source of a dropped incoming guest; it asks by itself', {
      migrationId,
      error: toFerryError(err).message,
    }),
  );
}
