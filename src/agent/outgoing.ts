/**
 * The source's part of migrations: an outgoing slot, the record of where the guest goes, the
 * hand-over of the key to the guest process (whose engine runs the migration), the operator's
 * cancel, and following a migration a previous agent left. What the source does with the
 * outcome, and when its guest may run here again: commit.ts.
 */
import { FerryError, toFerryError } from '../errors.js';
import type { GuestClient, MigrationInfo } from '../guest/index.js';
import type { MigrationEvent } from '../migration/types.js';
import type {
  CancelResult,
  ChannelKey,
  MigrationStreamEvent,
  OutgoingMigrationInfo,
  StartOutgoingParams,
  StartOutgoingResult,
} from '../control/protocol.js';
import { settleOutgoing } from './commit.js';
import {
  cancelledError,
  cryptoThreadsOf,
  refuseUnencryptable,
  waitForSlot,
  type MigrationHost,
  type MigrationRecords,
  type OutgoingMigration,
} from './migration-records.js';
import type { ResolveQueries } from './resolve-query.js';
import { noteEvent } from './migration-jobs.js';
import { crashPoint } from './crash-point.js';

/**
 * Hands the request's key and nonce to `use` and zeroes both as soon as `use` has returned its
 * promise: for a `use` that sends them on synchronously (GuestClient.migrateOut writes them to the
 * guest process before it returns), so the agent holds no copy while the migration runs.
 */
function handOverKey<T>({ key, nonce }: ChannelKey, use: (key: Buffer, nonce: Buffer) => Promise<T>): Promise<T> {
  try {
    return use(key, nonce);
  } finally {
    key.fill(0);
    nonce.fill(0);
  }
}

export class OutgoingMigrations {
  /** Guests with an outgoing migration here that has not ended: one at a time each. */
  private readonly leaving = new Set<string>();

  constructor(
    private readonly host: MigrationHost,
    private readonly records: MigrationRecords,
    private readonly queries: ResolveQueries,
  ) {}

  async start(
    p: StartOutgoingParams & ChannelKey,
    signal: AbortSignal,
    emit: (e: MigrationStreamEvent) => void,
  ): Promise<StartOutgoingResult> {
    refuseUnencryptable(this.host, p);
    const record = await this.host.guests.recordOf(p.guest);
    if (record.incoming) throw new FerryError('ERR_FERRY_REFUSED', `guest "${p.guest}" is still arriving here`);
    if (this.leaving.has(p.guest)) throw this.alreadyMigrating(p.guest);
    const client = await this.host.guests.client(p.guest);
    if (!client) throw new FerryError('ERR_FERRY_REFUSED', `guest "${p.guest}" does not run on host ${this.host.state.config.name}`);
    const { migration: m, end } = this.records.outgoing(p.migrationId, p.guest, p.destination, {
      mode: p.mode,
      maxBytesPerSecond: p.maxBytesPerSecond,
    });
    this.leaving.add(p.guest);
    // The coordinator that started it may lose this connection and follow it again on another.
    const tell = (e: MigrationStreamEvent) => {
      emit(e);
      for (const follower of m.followers) follower(e);
    };
    let release: (() => void) | null = null;
    try {
      release = await waitForSlot(this.host.outgoing, m, signal, tell);
      await this.host.state.writeOutgoing({ migrationId: p.migrationId, guest: p.guest, destination: p.destination });
      crashPoint('source:after-outgoing-record');
      if (m.cancelled) throw m.cancelled;
      tell({ type: 'started' });
      this.host.log.info('outgoing migration started', {
        migrationId: p.migrationId,
        guest: p.guest,
        to: p.destination.host,
        mode: p.mode,
        streams: p.streams,
      });
      const onEvent = (e: MigrationEvent) => {
        noteEvent(m, e);
        if (e.type === 'failover') {
          const { from, to, bytesResent } = e;
          this.host.log.warn('migration network lost: carrying on over the next', {
            migrationId: p.migrationId,
            guest: p.guest,
            from,
            to,
            bytesResent,
          });
        }
        tell(e);
      };
      m.guestClient = client;
      const info = await handOverKey(p, (key, nonce) =>
        client.migrateOut(
          {
            migrationId: p.migrationId,
            key,
            nonce,
            mode: p.mode,
            streams: p.streams,
            networks: p.networks,
            ...(p.maxBytesPerSecond ? { maxBytesPerSecond: p.maxBytesPerSecond } : {}),
            ...cryptoThreadsOf(this.host),
            ...(p.maxDowntimeMs ? { maxDowntimeMs: p.maxDowntimeMs } : {}),
            ...(p.timeoutMs ? { timeoutMs: p.timeoutMs } : {}),
            ...(p.autoConverge !== undefined ? { autoConverge: p.autoConverge } : {}),
            ...(p.verify !== undefined ? { verify: p.verify } : {}),
            ...(p.commitTimeoutMs ? { commitTimeoutMs: p.commitTimeoutMs } : {}),
            ...(p.removeSourceDisks ? { removeSourceDisks: true } : {}),
          },
          onEvent,
        ),
      );
      m.result = info.result;
      const outcome = await settleOutgoing(this.host, this.queries, m, client, info, tell);
      return { migrationId: p.migrationId, outcome, result: info.result };
    } catch (err) {
      m.failure = toFerryError(err);
      // It never reached the guest process (left the queue, cancelled, no state written), or the
      // guest process answered that it did not start it (a refused request, or no channel opened —
      // no network answered, or a cancel while connecting: nothing sent, the guest never paused):
      // the destination's copy can never commit, so it may go at once. A lost control connection
      // says nothing of how far the migration got: then the destination decides by itself.
      const guestSaidNo = m.guestClient !== null && !m.guestClient.lost;
      if (m.phase === 'queued' || m.guestClient === null || guestSaidNo) this.queries.tellAborted(p.destination, p.migrationId, p.guest);
      if (m.phase === 'queued') this.records.delete(p.migrationId);
      else m.phase = 'aborted';
      throw err;
    } finally {
      release?.();
      this.leaving.delete(p.guest);
      end();
    }
  }

  /**
   * Takes over a migration of source guest `guest` that a previous agent left (`info`, as its guest
   * process reports it): one still in pre-copy is followed to its end, holding one of the host's
   * outgoing slots and cancellable as if this agent had started it; one in doubt or committed is
   * settled at once. Returns without waiting for either.
   */
  adopt(guest: string, client: GuestClient, info: MigrationInfo, destination: { host: string; control: string }): void {
    const { migration: m, end } = this.records.outgoing(info.migrationId, guest, destination, null);
    m.phase = info.phase;
    m.result = info.result;
    m.guestClient = client;
    this.leaving.add(guest);
    const running = info.phase === 'running';
    const release = running ? this.host.outgoing.occupy() : null;
    if (running) this.host.log.info('following an outgoing migration left by the previous agent', { migrationId: info.migrationId, guest });
    const tell = (e: MigrationStreamEvent) => {
      for (const follower of m.followers) follower(e);
    };
    void (async () => {
      const settled = running
        ? await client.awaitMigration((e) => {
            noteEvent(m, e);
            tell(e);
          })
        : info;
      m.result = settled.result;
      await settleOutgoing(this.host, this.queries, m, client, settled, tell);
    })()
      .catch((err) => {
        m.failure = toFerryError(err);
        this.host.log.error('finishing a migration left by the previous agent failed', { migrationId: info.migrationId, err });
      })
      .finally(() => {
        release?.();
        this.leaving.delete(guest);
        end();
      });
  }

  /** Guest `guest`'s outgoing migration that has not ended yet. */
  async current(guest: string): Promise<OutgoingMigrationInfo> {
    const m = this.records.outgoingOf(guest).find((o) => o.ended !== null);
    if (!m) {
      await this.host.guests.recordOf(guest); // ERR_FERRY_NOT_FOUND for a guest that is not here
      throw new FerryError('ERR_FERRY_NOT_FOUND', `guest "${guest}" has no migration running on host ${this.host.state.config.name}`);
    }
    return { migrationId: m.migrationId, guest, destination: m.destination, phase: m.phase };
  }

  /**
   * The destination's agent recorded migration `migrationId` "not committed" on its own (it
   * restarted, and dropped the incoming guest its predecessor had not committed): nothing can
   * arrive there any more, so a migration still in pre-copy here stops now, the guest running on, instead of
   * redialling until its reconnect window ends. From the switch-over on the guest process refuses,
   * and the resolve query, which gets the same answer, settles it. Best effort.
   */
  destinationDropped(migrationId: string): void {
    const m = this.records.get(migrationId);
    if (!m || m.role !== 'source' || m.ended === null || m.phase !== 'running' || !m.guestClient) return;
    this.host.log.info('the destination dropped its copy: the migration stops, the guest runs on here', { migrationId, guest: m.guest });
    m.guestClient.cancelMigration(migrationId, 'destination-dropped').catch((err) =>
      this.host.log.info('the migration went on past the point of stopping; the destination decides it', {
        migrationId,
        error: toFerryError(err).message,
      }),
    );
  }

  /** Refusal of a second migration of a guest, naming the one that runs. */
  private alreadyMigrating(guest: string): FerryError {
    const m = this.records.outgoingOf(guest).find((o) => o.ended !== null);
    const which = m
      ? `migration ${m.migrationId} to ${m.destination.host} is still running (${m.phase})`
      : 'its migration is still running';
    return new FerryError('ERR_FERRY_REFUSED', `guest "${guest}" is already migrating: ${which}`);
  }

  /**
   * Follows outgoing migration `migrationId` to its end with its events, for a coordinator that
   * lost the connection that started it (or a migration a restarted agent adopted): the answer
   * start-outgoing would have given, or its error. Stops waiting, the migration untouched, when
   * `signal` aborts (the follower went away).
   */
  async follow(migrationId: string, signal: AbortSignal, emit: (e: MigrationStreamEvent) => void): Promise<StartOutgoingResult> {
    const m = this.records.get(migrationId);
    if (!m || m.role !== 'source') {
      throw new FerryError(
        'ERR_FERRY_NOT_FOUND',
        `no outgoing migration "${migrationId}" runs or ran on host ${this.host.state.config.name} since its agent started`,
      );
    }
    if (m.ended) {
      const gone = new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      m.followers.add(emit);
      let ended = false;
      try {
        await Promise.race([m.ended.then(() => (ended = true)), gone]);
      } finally {
        m.followers.delete(emit);
      }
      if (!ended) throw new FerryError('ERR_FERRY_ABORTED', 'stopped following: the migration carries on');
    }
    if (m.failure) throw m.failure;
    const outcome = m.phase === 'committed' || m.phase === 'in-doubt' ? m.phase : 'aborted';
    return { migrationId, outcome, result: m.result };
  }

  /**
   * The operator's cancel of guest `guest`'s outgoing migration (`migrationId`, when given, must be
   * the one): see cancelOne. Answers once the migration has ended.
   */
  async cancel(guest: string, migrationId?: string): Promise<CancelResult> {
    const mine = this.records.outgoingOf(guest);
    const m = migrationId === undefined ? mine.find((o) => o.ended !== null) : mine.find((o) => o.migrationId === migrationId);
    if (!m) {
      await this.host.guests.recordOf(guest); // ERR_FERRY_NOT_FOUND for a guest that is not here
      const which = migrationId === undefined ? 'no migration' : `no migration "${migrationId}"`;
      throw new FerryError('ERR_FERRY_REFUSED', `guest "${guest}" has ${which} to cancel on host ${this.host.state.config.name}`);
    }
    await this.cancelOne(m);
    // Left the queue (phase still 'queued'), or the engine stopped: the guest runs here either way,
    // unless the migration had got past the point of cancelling by the time the request arrived.
    const outcome = m.phase === 'committed' || m.phase === 'in-doubt' ? m.phase : 'aborted';
    return { migrationId: m.migrationId, guest, to: m.destination.host, outcome, result: m.result };
  }

  /**
   * Queued: it leaves the queue. Pre-copy: the guest process's engine stops, the guest runs on here
   * un-throttled, and the destination is told to drop its copy. From the switch-over on the guest
   * process refuses: the destination decides (docs/migration.md, "Cancelling").
   * Resolves once the migration has ended.
   */
  async cancelOne(m: OutgoingMigration): Promise<void> {
    const { migrationId } = m;
    if (m.ended === null) throw new FerryError('ERR_FERRY_REFUSED', `migration "${migrationId}" is ${m.phase}: nothing left to cancel`);
    if (m.phase === 'in-doubt') {
      throw new FerryError(
        'ERR_FERRY_REFUSED',
        `migration "${migrationId}" is in doubt: the guest stays paused here until the destination's decision arrives, which ends it`,
      );
    }
    if (m.phase === 'queued') {
      m.leaveQueue.abort(cancelledError(true));
    } else if (m.guestClient) {
      await m.guestClient.cancelMigration(migrationId);
    } else {
      m.cancelled = cancelledError(false); // start() sees it before it starts the guest's migration
    }
    this.host.log.info('outgoing migration cancelled by the operator', { migrationId, guest: m.guest, phase: m.phase });
    await m.ended;
  }
}
