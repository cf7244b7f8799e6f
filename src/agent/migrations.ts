/**
 * The agent's migrations, as its control API and data-plane router see them: one entry point per
 * request, each handed to the side that owns it.
 *
 *   incoming.ts       destination: incoming slot, incoming guest process, the resolve query's answer
 *   outgoing.ts       source: outgoing slot, the key to the guest process, cancel, adopting after a restart
 *   commit.ts         the commit rule, both sides: the destination decides, the source obeys
 *   resolve-query.ts  source: asking the destination's agent what it decided
 *   fence.ts          the operator's fence of a lost destination, and a restarted destination's claim
 *   recovery.ts       after a restart: what the previous agent left
 *   migration-records.ts  the per-role records that `migration.status` reads
 *   migration-jobs.ts     their progress figures, as `migration.list` (ferry migrations) shows them
 */
import type { Socket } from 'node:net';
import type {
  CancelResult,
  ChannelKey,
  MigrationJob,
  MigrationStatus,
  MigrationStreamEvent,
  OutgoingMigrationInfo,
  Peer,
  PrepareIncomingParams,
  PrepareIncomingResult,
  ResolveDecision,
  StartOutgoingParams,
  StartOutgoingResult,
  WaitingMigration,
} from '../control/protocol.js';
import { FerryError } from '../errors.js';
import { claimFromSource, SourceFences, tellSourceDropped } from './fence.js';
import { IncomingMigrations } from './incoming.js';
import { MigrationRecords, type MigrationHost } from './migration-records.js';
import { OutgoingMigrations } from './outgoing.js';
import { recover } from './recovery.js';
import { ResolveQueries } from './resolve-query.js';
import { jobOf } from './migration-jobs.js';

export class MigrationManager {
  private readonly records: MigrationRecords;
  private readonly queries: ResolveQueries;
  private readonly incoming: IncomingMigrations;
  private readonly outgoing: OutgoingMigrations;
  private readonly fences: SourceFences;

  constructor(private readonly host: MigrationHost) {
    this.records = new MigrationRecords((m) => host.onEnded?.(m));
    this.queries = new ResolveQueries(host);
    this.incoming = new IncomingMigrations(host, this.records);
    this.outgoing = new OutgoingMigrations(host, this.records, this.queries);
    this.fences = new SourceFences(host, this.records, this.queries);
  }

  /** The data-plane router's callback: hands a connection to the incoming guest of its migration. */
  route(migrationId: string, socket: Socket, head: Buffer): boolean {
    return this.incoming.route(migrationId, socket, head);
  }

  status(migrationId: string): MigrationStatus {
    return this.records.status(migrationId);
  }

  /** Every migration of this host that has not ended, queued ones included, as jobs (`migration.list`). */
  jobs(): MigrationJob[] {
    return this.records.active().map((m) => jobOf(m, this.host.state.config.name));
  }

  prepareIncoming(
    p: PrepareIncomingParams & ChannelKey,
    signal: AbortSignal,
    emit: (e: { type: 'queued'; position: number }) => void,
  ): Promise<PrepareIncomingResult> {
    return this.incoming.prepare(p, signal, emit);
  }

  startOutgoing(
    p: StartOutgoingParams & ChannelKey,
    signal: AbortSignal,
    emit: (e: MigrationStreamEvent) => void,
  ): Promise<StartOutgoingResult> {
    return this.outgoing.start(p, signal, emit);
  }

  /** Destination: "not committed", final, and the incoming guest dropped. Source: cancel (`cancel`). */
  async abort(migrationId: string): Promise<ResolveDecision | null> {
    const m = this.records.get(migrationId);
    if (m?.role === 'source') {
      await this.outgoing.cancelOne(m);
      return null;
    }
    return this.incoming.giveUp(migrationId);
  }

  /** Destination: what it decided; "not committed" recorded now when nothing was (incoming.ts). */
  resolve(migrationId: string): Promise<ResolveDecision> {
    return this.incoming.resolve(migrationId);
  }

  /** Source: the operator's cancel of guest `guest`'s outgoing migration; answers once it has ended. */
  cancel(guest: string, migrationId?: string): Promise<CancelResult> {
    return this.outgoing.cancel(guest, migrationId);
  }

  /**
   * The migration of source guest `guest` that waits, paused and in doubt, for its destination's
   * decision, and where it went (as recorded when it started): what `ferry resolve` asks first.
   */
  async waiting(guest: string): Promise<WaitingMigration> {
    for (const m of this.records.outgoingOf(guest)) {
      if (m.phase !== 'in-doubt' || !this.queries.waiting(m.migrationId)) continue;
      const { destination } = await this.host.state.readOutgoing(m.migrationId);
      return { migrationId: m.migrationId, guest, destination };
    }
    throw new FerryError('ERR_FERRY_NOT_FOUND', `guest "${guest}" has no migration waiting in doubt on this host`);
  }

  /** The destination's decision, relayed by the coordinator, for a source migration in doubt here. */
  settle(migrationId: string, decision: ResolveDecision): ResolveDecision {
    return this.queries.relay(migrationId, decision);
  }

  /** Source: guest `guest`'s outgoing migration that has not ended. */
  outgoingOf(guest: string): Promise<OutgoingMigrationInfo> {
    return this.outgoing.current(guest);
  }

  /** Source: outgoing migration `migrationId` followed to its end (outgoing.ts). */
  follow(migrationId: string, signal: AbortSignal, emit: (e: MigrationStreamEvent) => void): Promise<StartOutgoingResult> {
    return this.outgoing.follow(migrationId, signal, emit);
  }

  /** Source in doubt: the operator's fence (fence.ts); resolves once the guest runs here again. */
  fence(migrationId: string): Promise<void> {
    return this.fences.fence(migrationId);
  }

  /** Source: a restarted destination's decision for a migration its previous agent left (fence.ts). */
  async decided(migrationId: string, decision: ResolveDecision, peer: Peer): Promise<ResolveDecision> {
    const answer = await this.fences.decided(migrationId, decision, peer);
    if (answer === 'not-committed') this.outgoing.destinationDropped(migrationId);
    return answer;
  }

  /** Destination: the source's operator fenced the migration; this host's copy goes (incoming.ts). */
  learnFence(migrationId: string, peer: Peer): Promise<boolean> {
    return this.incoming.learnFence(migrationId, peer);
  }

  /** Finishes what a previous agent left (recovery.ts). */
  recover(): Promise<void> {
    const stopped = () => this.incoming.isStopped;
    return recover(this.host, this.outgoing, {
      mayRun: (migrationId) => claimFromSource(this.host, migrationId, stopped),
      dropped: (migrationId) => tellSourceDropped(this.host, migrationId),
    });
  }

  /** Background work leaves what it has not decided to the next agent. */
  stop(): void {
    this.incoming.stop();
    this.queries.stop();
    this.fences.stop();
  }
}
