/**
 * The agent's part of migrations: per-host limits, the incoming guest processes (and the data
 * connections routed to them), and the ownership records that make the commit safe.
 *
 * Destination: the decision record (`ownership/ID.decision.json`, first writer wins) is the
 * ownership record. At ready-to-commit the agent writes "committed" and only then lets the guest
 * run; a resolve query that came first wrote "not committed", and the guest is dropped instead.
 * Source: COMMITTED from the guest process means the destination runs the guest: record the
 * hand-off and let this copy go. In doubt (channel lost after switch-over), ask the destination's
 * agent until it answers, and resume only on "not committed". docs/operations.md has the argument.
 */
import type { Socket } from 'node:net';
import { FerryError, toFerryError } from '../errors.js';
import { startIncomingGuest, type GuestClient, type IncomingGuest, type MigrationInfo } from '../guest/index.js';
import type { MigrationEvent } from '../migration/types.js';
import { AgentClient } from '../control/client.js';
import type { GuestManager } from './guests.js';
import type { Logger } from '../common/log.js';
import type {
  CancelResult, ChannelKey, MigrationStatus, PrepareIncomingParams, PrepareIncomingResult, ResolveDecision, StartOutgoingParams,
  StartOutgoingResult, WaitingMigration, WireChannelSpec, MigrationStreamEvent,
} from '../control/protocol.js';
import type { SlotQueue } from './queue.js';
import type { StateDir } from './state.js';
import { FERRY_VERSION } from '../common/version.js';

/** An incoming migration that has seen no data this long after it was prepared is given up. */
export const DEFAULT_START_TIMEOUT_MS = 30 * 60_000;

/** Waits between resolve attempts while the destination cannot be asked: 1 s, doubling, at most 10 s. */
const RESOLVE_BACKOFF_MS = [1000, 2000, 4000, 8000, 10_000];

interface Tracked extends MigrationStatus {
  /** Ends a queued wait. */
  cancel: AbortController;
  /** Source: the guest process's control connection, once migrate-out went to it (a cancel follows on it). */
  guestClient?: GuestClient;
  /** Source: a cancel asked after the queue and before migrate-out went to the guest process. */
  cancelled?: FerryError;
  /** Source: resolves when start-outgoing has ended, however it ended. */
  ended?: Promise<void>;
  /** Source: the destination host. */
  to?: string;
}

/** The operator's cancel, as the guest process's engine and the queue report it. */
const cancelledError = (queued: boolean) => new FerryError('ERR_FERRY_ABORTED', `cancelled by the operator${queued ? ' while queued' : ''}`);

export interface MigrationHost {
  state: StateDir;
  guests: GuestManager;
  outgoing: SlotQueue;
  incoming: SlotQueue;
  log: Logger;
  encrypts: boolean;
  /** Threads each migration's channel may seal or open on (the host's budget shared out); undefined: every core. */
  cryptoThreads: number | undefined;
  /** The migration addresses this agent listens on. */
  networks(): string[];
}

/** Hands the request's key and nonce (the control server's Buffers) to `use`, then zeroes both. */
async function withKey<T>({ key, nonce }: ChannelKey, use: (key: Buffer, nonce: Buffer) => Promise<T>): Promise<T> {
  try {
    return await use(key, nonce);
  } finally {
    key.fill(0);
    nonce.fill(0);
  }
}

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


export class MigrationManager {
  private readonly tracked = new Map<string, Tracked>();
  private readonly incomingGuests = new Map<string, IncomingGuest>();
  private readonly outgoingGuests = new Set<string>();
  /** Set by stop(): background work leaves what it has not decided to the next agent. */
  private stopped = false;

  constructor(private readonly host: MigrationHost) {}

  private get log(): Logger {
    return this.host.log;
  }

  /** The data-plane router's callback: hands a connection to the incoming guest of its migration. */
  route(migrationId: string, socket: Socket, head: Buffer): boolean {
    const guest = this.incomingGuests.get(migrationId);
    if (!guest) return false;
    guest.addConnection(socket, head);
    return true;
  }

  status(migrationId: string): MigrationStatus {
    const t = this.tracked.get(migrationId);
    if (!t) throw new FerryError('ERR_FERRY_NOT_FOUND', `no migration "${migrationId}" known to this agent since it started`);
    const { migrationId: id, role, guest, phase, position, lastEvent, result } = t;
    return { migrationId: id, role, guest, phase, position, lastEvent, result };
  }

  private track(migrationId: string, role: 'source' | 'destination', guest: string): Tracked {
    if (this.tracked.has(migrationId)) throw new FerryError('ERR_FERRY_INPUT', `migration "${migrationId}" is already known here`);
    const t: Tracked = { migrationId, role, guest, phase: 'queued', position: null, lastEvent: null, result: null, cancel: new AbortController() };
    this.tracked.set(migrationId, t);
    return t;
  }

  /** This host's limit for a migration's crypto, as the guest process's channel takes it (the agent's own, never the coordinator's). */
  private cryptoThreads(): { cryptoThreads?: number } {
    return this.host.cryptoThreads === undefined ? {} : { cryptoThreads: this.host.cryptoThreads };
  }

  private refuseUnencryptable(spec: WireChannelSpec): void {
    if (spec.mode === 'encrypted' && !this.host.encrypts) {
      throw new FerryError('ERR_FERRY_REFUSED', 'this agent cannot encrypt (it runs with --no-encryption): the coordinator must not ask for an encrypted migration');
    }
  }

  /** Waits for a slot, telling the caller its place; leaves the queue when `signals` abort. */
  private async slot(queue: SlotQueue, t: Tracked, signal: AbortSignal, emit: (e: { type: 'queued'; position: number }) => void) {
    const both = AbortSignal.any([signal, t.cancel.signal]);
    const release = await queue.acquire({
      signal: both,
      onPosition: (position) => {
        t.position = position;
        emit({ type: 'queued', position });
      },
    });
    t.position = null;
    t.phase = 'running';
    return release;
  }

  // ---- destination --------------------------------------------------------------------------

  async prepareIncoming(p: PrepareIncomingParams & ChannelKey, signal: AbortSignal, emit: (e: { type: 'queued'; position: number }) => void): Promise<PrepareIncomingResult> {
    this.refuseUnencryptable(p);
    if ((await this.host.state.decision(p.migrationId)) !== null) {
      throw new FerryError('ERR_FERRY_REFUSED', `migration "${p.migrationId}" was already decided here`);
    }
    const nicFallback = p.guest.nic === 'sriov' && !this.host.state.config.hasSriov;
    const config = nicFallback ? { ...p.guest, nic: 'virtio' as const } : p.guest;
    const t = this.track(p.migrationId, 'destination', config.name);
    let release: (() => void) | null = null;
    try {
      release = await this.slot(this.host.incoming, t, signal, emit);
      const dir = this.host.state.guestDir(config.name);
      const incoming = await this.host.guests.beginIncoming(config, p.migrationId, () =>
        withKey(p, (key, nonce) => startIncomingGuest(dir, config, {
          migrationId: p.migrationId, key, nonce, mode: p.mode, streams: p.streams,
          ...(p.maxBytesPerSecond ? { maxBytesPerSecond: p.maxBytesPerSecond } : {}),
          ...this.cryptoThreads(),
        })),
      );
      this.incomingGuests.set(p.migrationId, incoming);
      this.log.info('incoming migration prepared', { migrationId: p.migrationId, guest: config.name, from: p.source, mode: p.mode, nicFallback });
      const held = release;
      release = null; // from here the follower releases it
      void this.followIncoming(t, incoming.client, held, p.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
      return { migrationId: p.migrationId, networks: this.host.networks(), nicFallback, guest: config };
    } catch (err) {
      this.tracked.delete(p.migrationId);
      throw err;
    } finally {
      release?.();
    }
  }

  /** Follows an incoming guest to its end, and decides. */
  private async followIncoming(t: Tracked, client: GuestClient, release: () => void, startTimeoutMs: number): Promise<void> {
    const { migrationId, guest } = t;
    const unstarted = setTimeout(() => {
      if (t.lastEvent !== null) return;
      this.log.warn('incoming migration never started: giving it up', { migrationId, guest, startTimeoutMs });
      void this.resolve(migrationId);
    }, startTimeoutMs).unref();
    try {
      const info = await client.awaitMigration((e) => (t.lastEvent = e));
      if (info.phase === 'ready-to-commit') await this.decideIncoming(t, client);
      else await this.dropIncoming(t, info);
    } catch (err) {
      if (this.stopped) return; // the agent is stopping: the next one decides (recover())
      // The guest process or its control connection is gone before a decision: not committed,
      // unless a commit was recorded, in which case the record stands and a restart finishes it.
      const decision = await this.host.state.decide(migrationId, guest, 'not-committed').catch(() => null);
      this.log.error('incoming migration failed', { migrationId, guest, decision, err });
      if (decision === 'not-committed') {
        t.phase = 'aborted';
        await this.host.guests.forget(guest).catch(() => {});
      }
    } finally {
      clearTimeout(unstarted);
      this.incomingGuests.delete(migrationId);
      release();
    }
  }

  private async decideIncoming(t: Tracked, client: GuestClient): Promise<void> {
    const { migrationId, guest } = t;
    t.phase = 'ready-to-commit';
    const decision = await this.host.state.decide(migrationId, guest, 'committed');
    if (decision === 'committed') {
      // Durable before the guest runs: ownership first, then resume (which answers COMMITTED).
      await this.host.guests.commitIncoming(guest);
      const final = await client.commit();
      t.phase = 'committed';
      t.result = final.result;
      this.log.info('incoming migration committed', { migrationId, guest });
    } else {
      // A resolve query answered "not committed" first: that answer stands.
      const final = await client.abort().catch(() => null);
      t.phase = 'aborted';
      t.result = final?.result ?? null;
      await this.host.guests.forget(guest);
      this.log.warn('incoming migration not committed: the source was told so first', { migrationId, guest });
    }
  }

  private async dropIncoming(t: Tracked, info: MigrationInfo): Promise<void> {
    await this.host.state.decide(t.migrationId, t.guest, 'not-committed');
    t.phase = 'aborted';
    t.result = info.result;
    await this.host.guests.forget(t.guest);
    this.log.warn('incoming migration aborted', { migrationId: t.migrationId, guest: t.guest, error: info.result?.error ?? null });
  }

  /** Destination: "not committed", final, and the incoming guest dropped. Source: cancel (`cancel`). */
  async abort(migrationId: string): Promise<ResolveDecision | null> {
    const t = this.tracked.get(migrationId);
    if (t?.role === 'source') {
      await this.cancelOutgoing(t);
      return null;
    }
    // Queued here, only a cancel from the coordinator gets this far (it gives up a prepared one otherwise).
    if (t?.phase === 'queued') t.cancel.abort(cancelledError(true));
    return this.resolve(migrationId);
  }

  /**
   * The destination's answer to "what did you decide?": the recorded decision, or "not committed"
   * recorded now — final: an incoming guest still receiving is dropped, and a later commit refused.
   */
  async resolve(migrationId: string): Promise<ResolveDecision> {
    const decision = await this.host.state.decide(migrationId, this.tracked.get(migrationId)?.guest ?? '', 'not-committed');
    const incoming = this.incomingGuests.get(migrationId);
    if (decision === 'not-committed' && incoming) {
      // The follower sees the process go and cleans up.
      await incoming.client.destroy().catch(() => {});
    }
    this.log.info('migration resolved', { migrationId, decision });
    return decision;
  }

  // ---- source -------------------------------------------------------------------------------

  /**
   * The operator's cancel of guest `guest`'s outgoing migration (`migrationId`, when given, must be
   * the one): see cancelOutgoing. Answers once the migration has ended.
   */
  async cancel(guest: string, migrationId?: string): Promise<CancelResult> {
    const mine = [...this.tracked.values()].filter((m) => m.role === 'source' && m.guest === guest);
    const t = migrationId === undefined ? mine.find((m) => m.ended !== undefined) : mine.find((m) => m.migrationId === migrationId);
    if (!t) {
      await this.host.guests.recordOf(guest); // ERR_FERRY_NOT_FOUND for a guest that is not here
      const which = migrationId === undefined ? 'no migration' : `no migration "${migrationId}"`;
      throw new FerryError('ERR_FERRY_REFUSED', `guest "${guest}" has ${which} to cancel on host ${this.host.state.config.name}`);
    }
    await this.cancelOutgoing(t);
    // Left the queue (phase still 'queued'), or the engine stopped: the guest runs here either way,
    // unless the migration had got past the point of cancelling by the time the request arrived.
    const outcome = t.phase === 'committed' || t.phase === 'in-doubt' ? t.phase : 'aborted';
    return { migrationId: t.migrationId, guest, to: t.to ?? '', outcome, result: t.result };
  }

  /**
   * Queued: it leaves the queue. Pre-copy: the guest process's engine stops, the guest runs on here
   * un-throttled, and settleOutgoing tells the destination to drop its copy. From the switch-over
   * on the guest process refuses: the destination decides (docs/migration.md, "Cancelling").
   * Resolves once start-outgoing has ended.
   */
  private async cancelOutgoing(t: Tracked): Promise<void> {
    const { migrationId } = t;
    if (t.ended === undefined) throw new FerryError('ERR_FERRY_REFUSED', `migration "${migrationId}" is ${t.phase}: nothing left to cancel`);
    if (t.phase === 'in-doubt') {
      throw new FerryError('ERR_FERRY_REFUSED', `migration "${migrationId}" is in doubt: the guest stays paused here until the destination's decision arrives, which ends it`);
    }
    if (t.phase === 'queued') {
      t.cancel.abort(cancelledError(true));
    } else if (t.guestClient) {
      await t.guestClient.cancelMigration(migrationId);
    } else {
      t.cancelled = cancelledError(false); // startOutgoing sees it before it starts the guest's migration
    }
    this.log.info('outgoing migration cancelled by the operator', { migrationId, guest: t.guest, phase: t.phase });
    await t.ended;
  }

  async startOutgoing(p: StartOutgoingParams & ChannelKey, signal: AbortSignal, emit: (e: MigrationStreamEvent) => void): Promise<StartOutgoingResult> {
    this.refuseUnencryptable(p);
    const record = await this.host.guests.recordOf(p.guest);
    if (record.incoming) throw new FerryError('ERR_FERRY_REFUSED', `guest "${p.guest}" is still arriving here`);
    if (this.outgoingGuests.has(p.guest)) throw new FerryError('ERR_FERRY_REFUSED', `guest "${p.guest}" is already migrating`);
    const client = await this.host.guests.client(p.guest);
    if (!client) throw new FerryError('ERR_FERRY_REFUSED', `guest "${p.guest}" does not run on host ${this.host.state.config.name}`);
    const t = this.track(p.migrationId, 'source', p.guest);
    t.to = p.destination.host;
    let ended = (): void => {};
    t.ended = new Promise<void>((resolve) => (ended = resolve));
    this.outgoingGuests.add(p.guest);
    let release: (() => void) | null = null;
    try {
      release = await this.slot(this.host.outgoing, t, signal, emit);
      await this.host.state.writeOutgoing({ migrationId: p.migrationId, guest: p.guest, destination: p.destination });
      if (t.cancelled) throw t.cancelled;
      emit({ type: 'started' });
      this.log.info('outgoing migration started', { migrationId: p.migrationId, guest: p.guest, to: p.destination.host, mode: p.mode, streams: p.streams });
      const onEvent = (e: MigrationEvent) => {
        t.lastEvent = e;
        emit(e);
      };
      t.guestClient = client;
      const info = await handOverKey(p, (key, nonce) =>
        client.migrateOut({
          migrationId: p.migrationId, key, nonce, mode: p.mode, streams: p.streams, networks: p.networks,
          ...(p.maxBytesPerSecond ? { maxBytesPerSecond: p.maxBytesPerSecond } : {}),
          ...this.cryptoThreads(),
          ...(p.maxDowntimeMs ? { maxDowntimeMs: p.maxDowntimeMs } : {}),
          ...(p.timeoutMs ? { timeoutMs: p.timeoutMs } : {}),
          ...(p.autoConverge !== undefined ? { autoConverge: p.autoConverge } : {}),
          ...(p.verify !== undefined ? { verify: p.verify } : {}),
          ...(p.commitTimeoutMs ? { commitTimeoutMs: p.commitTimeoutMs } : {}),
        }, onEvent),
      );
      t.result = info.result;
      const outcome = await this.settleOutgoing(t, client, info, p.destination, emit);
      return { migrationId: p.migrationId, outcome, result: info.result };
    } catch (err) {
      // It never reached the guest process (left the queue, cancelled, no state written), or the
      // guest process answered that it did not start it (a refused request, or no channel opened —
      // no network answered, or a cancel while connecting: nothing sent, the guest never paused):
      // the destination's copy can never commit, so it may go at once. A lost control connection
      // says nothing of how far the migration got: then the destination decides by itself.
      const guestSaidNo = t.guestClient !== undefined && !t.guestClient.lost;
      if (t.phase === 'queued' || t.guestClient === undefined || guestSaidNo) this.tellDestinationAborted(p.destination, p.migrationId, p.guest);
      if (t.phase === 'queued') this.tracked.delete(p.migrationId);
      else t.phase = 'aborted';
      throw err;
    } finally {
      release?.();
      this.outgoingGuests.delete(p.guest);
      t.ended = undefined;
      ended();
    }
  }

  /** Acts on how the guest process says the migration ended; asks the destination when in doubt. */
  private async settleOutgoing(
    t: Tracked,
    client: GuestClient,
    info: MigrationInfo,
    destination: { host: string; control: string },
    emit: (e: MigrationStreamEvent) => void,
  ): Promise<'committed' | 'aborted'> {
    let decision: ResolveDecision;
    if (info.phase === 'committed') decision = 'committed';
    else if (info.phase === 'in-doubt') {
      t.phase = 'in-doubt';
      this.log.warn('outgoing migration in doubt: the guest stays paused until the destination answers', { migrationId: t.migrationId, guest: t.guest });
      decision = await this.resolveWith(destination, t.migrationId, emit);
      emit({ type: 'resolved', decision });
    } else {
      t.phase = 'aborted';
      this.log.warn('outgoing migration aborted: the guest runs here', { migrationId: t.migrationId, guest: t.guest, error: info.result?.error ?? null });
      this.tellDestinationAborted(destination, t.migrationId, t.guest);
      return 'aborted';
    }
    if (decision === 'committed') {
      await this.host.state.recordHandoff(t.migrationId, t.guest, destination.host);
      await client.finish().catch((err) => this.log.warn('finishing the handed-over guest failed', { guest: t.guest, err }));
      await this.host.guests.forget(t.guest);
      t.phase = 'committed';
      this.log.info('guest handed over', { migrationId: t.migrationId, guest: t.guest, to: destination.host });
      return 'committed';
    }
    await client.resumeAfterAbort();
    t.phase = 'aborted';
    this.log.info('destination did not commit: the guest runs here again', { migrationId: t.migrationId, guest: t.guest });
    return 'aborted';
  }

  /** One `migration.resolve` at the destination's agent, with this host's own certificate. */
  private async askDestination(destination: { host: string; control: string }, migrationId: string): Promise<ResolveDecision> {
    const client = await AgentClient.connect({
      address: destination.control,
      host: destination.host,
      credentials: await this.host.state.credentials(),
      client: `ferry-agent ${FERRY_VERSION} (${this.host.state.config.name})`,
    });
    try {
      return (await client.call('migration.resolve', { migrationId })).decision;
    } finally {
      client.close();
    }
  }

  /** Source migrations in doubt, waiting for the destination's decision: where a relayed one goes. */
  private readonly unsettled = new Map<string, (decision: ResolveDecision) => void>();

  /**
   * Asks the destination's agent for its decision until it answers, or until the coordinator
   * relays that agent's answer (`settle`): the way for a destination in another cluster.
   */
  private async resolveWith(destination: { host: string; control: string }, migrationId: string, emit: (e: MigrationStreamEvent) => void): Promise<ResolveDecision> {
    let relayed: ResolveDecision | null = null;
    let wake = (): void => {};
    this.unsettled.set(migrationId, (decision) => {
      relayed = decision;
      wake();
    });
    try {
      for (let attempt = 1; ; attempt++) {
        let error: string | null = null;
        try {
          return await this.askDestination(destination, migrationId);
        } catch (err) {
          error = toFerryError(err).message;
        }
        if (relayed) return relayed;
        if (this.stopped) throw new FerryError('ERR_FERRY_ABORTED', 'the agent is stopping; the migration stays in doubt until it restarts');
        emit({ type: 'resolving', attempt, error });
        this.log.warn('cannot ask the destination yet', { migrationId, attempt, error });
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, RESOLVE_BACKOFF_MS[Math.min(attempt - 1, RESOLVE_BACKOFF_MS.length - 1)]!);
          wake = () => (clearTimeout(timer), resolve());
        });
        if (relayed) {
          this.log.info('the coordinator relayed the destination\'s decision', { migrationId, decision: relayed });
          return relayed;
        }
      }
    } finally {
      this.unsettled.delete(migrationId);
    }
  }

  /** The destination's decision, relayed by the coordinator, for a source migration in doubt here. */
  /**
   * The migration of source guest `guest` that waits, paused and in doubt, for its destination's
   * decision, and where it went (as recorded when it started): what `ferry resolve` asks first.
   */
  async waiting(guest: string): Promise<WaitingMigration> {
    for (const t of this.tracked.values()) {
      if (t.role !== 'source' || t.guest !== guest || t.phase !== 'in-doubt' || !this.unsettled.has(t.migrationId)) continue;
      const { destination } = await this.host.state.readOutgoing(t.migrationId);
      return { migrationId: t.migrationId, guest, destination };
    }
    throw new FerryError('ERR_FERRY_NOT_FOUND', `guest "${guest}" has no migration waiting in doubt on this host`);
  }

  settle(migrationId: string, decision: ResolveDecision): ResolveDecision {
    const deliver = this.unsettled.get(migrationId);
    if (!deliver) throw new FerryError('ERR_FERRY_REFUSED', `migration "${migrationId}" is not waiting in doubt for a decision here`);
    deliver(decision);
    return decision;
  }

  /**
   * After the source aborted on its own (before switch-over, the guest running here), the
   * destination's copy can never commit: ask it to decide now, so it frees the memory at once
   * instead of waiting for its channel to time out. Best effort: if the control network is down
   * too, the destination's own timeout gets there. "committed" here would mean two running
   * copies, which the protocol rules out; it is logged as an error should it ever happen.
   */
  private tellDestinationAborted(destination: { host: string; control: string }, migrationId: string, guest: string): void {
    this.askDestination(destination, migrationId).then(
      (decision) => {
        if (decision === 'committed') this.log.error('the destination recorded a commit for a migration this source aborted', { migrationId, guest });
        else this.log.info('the destination gave up its copy', { migrationId, guest });
      },
      (err) => this.log.warn('could not tell the destination to give up its copy; its own timeout will', { migrationId, guest, error: toFerryError(err).message }),
    );
  }

  // ---- after a restart ----------------------------------------------------------------------

  /**
   * Finishes what a previous agent left: incoming guests are committed when their commit was
   * recorded and dropped otherwise; source guests in doubt get their answer from the destination.
   */
  async recover(): Promise<void> {
    for (const record of await this.host.guests.records()) {
      const name = record.config.name;
      try {
        if (record.incoming) await this.recoverIncoming(name, record.incoming);
        else await this.recoverOutgoing(name);
      } catch (err) {
        this.log.error('recovery failed', { guest: name, err });
      }
    }
  }

  private async recoverIncoming(name: string, migrationId: string): Promise<void> {
    const decision = await this.host.state.decide(migrationId, name, 'not-committed');
    const client = await this.host.guests.client(name);
    if (decision === 'not-committed') {
      await this.host.guests.forget(name);
      this.log.warn('dropped an incoming guest left by the previous agent', { migrationId, guest: name });
      return;
    }
    const info = client ? await client.migration() : null;
    if (client && info?.phase === 'ready-to-commit') await client.commit();
    await this.host.guests.commitIncoming(name);
    this.log.info('finished a commit left by the previous agent', { migrationId, guest: name });
  }

  /**
   * A source guest whose migration the previous agent left: still in pre-copy (followed to its end,
   * and cancellable as if this agent had started it, holding one of the host's outgoing slots),
   * in doubt (the destination is asked), or committed (the copy let go).
   */
  private async recoverOutgoing(name: string): Promise<void> {
    const client = await this.host.guests.client(name);
    const info = client ? await client.migration() : null;
    if (!client || !info || info.role !== 'source' || (info.phase !== 'running' && info.phase !== 'in-doubt' && info.phase !== 'committed')) return;
    const out = await this.host.state.readOutgoing(info.migrationId);
    const t = this.track(info.migrationId, 'source', name);
    t.phase = info.phase;
    t.result = info.result;
    t.to = out.destination.host;
    t.guestClient = client;
    let ended = (): void => {};
    t.ended = new Promise<void>((resolve) => (ended = resolve));
    this.outgoingGuests.add(name);
    const release = info.phase === 'running' ? this.host.outgoing.occupy() : null;
    if (info.phase === 'running') this.log.info('following an outgoing migration left by the previous agent', { migrationId: info.migrationId, guest: name });
    void (async () => {
      const settled = info.phase === 'running' ? await client.awaitMigration((e) => (t.lastEvent = e)) : info;
      t.result = settled.result;
      await this.settleOutgoing(t, client, settled, out.destination, () => {});
    })()
      .catch((err) => this.log.error('finishing a migration left by the previous agent failed', { migrationId: info.migrationId, err }))
      .finally(() => {
        release?.();
        this.outgoingGuests.delete(name);
        t.ended = undefined;
        ended();
      });
  }

  stop(): void {
    this.stopped = true;
  }
}
