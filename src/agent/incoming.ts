/**
 * The destination's part of migrations: an incoming slot, the incoming guest process (and the data
 * connections routed to it), following it until it is ready, and the answer to the source's
 * resolve query. What is decided, and when the guest may run: commit.ts.
 */
import type { Socket } from 'node:net';
import { FerryError } from '../errors.js';
import { startIncomingGuest, type GuestClient, type IncomingGuest, type MigrationInfo } from '../guest/index.js';
import type { ChannelKey, Peer, PrepareIncomingParams, PrepareIncomingResult, ResolveDecision } from '../control/protocol.js';
import { commitOrDrop, decideNotCommitted } from './commit.js';
import {
  cancelledError,
  cryptoThreadsOf,
  refuseUnencryptable,
  waitForSlot,
  type IncomingMigration,
  type MigrationHost,
  type MigrationRecords,
} from './migration-records.js';
import { noteConnection, noteEvent } from './migration-jobs.js';
import { crashPoint } from './crash-point.js';

/** An incoming migration that has seen no data this long after it was prepared is given up. */
export const DEFAULT_START_TIMEOUT_MS = 30 * 60_000;

/** Hands the request's key and nonce (the control server's Buffers) to `use`, then zeroes both. */
async function withKey<T>({ key, nonce }: ChannelKey, use: (key: Buffer, nonce: Buffer) => Promise<T>): Promise<T> {
  try {
    return await use(key, nonce);
  } finally {
    key.fill(0);
    nonce.fill(0);
  }
}

export class IncomingMigrations {
  /** The incoming guest processes by migration id, from prepare to their end. */
  private readonly arriving = new Map<string, IncomingGuest>();
  /** Set by stop(): a migration not yet decided is left to the next agent. */
  private stopped = false;

  constructor(
    private readonly host: MigrationHost,
    private readonly records: MigrationRecords,
  ) {}

  /** The data-plane router's callback: hands a connection to the incoming guest of its migration. */
  route(migrationId: string, socket: Socket, head: Buffer): boolean {
    const guest = this.arriving.get(migrationId);
    if (!guest) return false;
    const m = this.records.get(migrationId);
    if (m) noteConnection(m, socket);
    guest.addConnection(socket, head);
    return true;
  }

  async prepare(
    p: PrepareIncomingParams & ChannelKey,
    signal: AbortSignal,
    emit: (e: { type: 'queued'; position: number }) => void,
  ): Promise<PrepareIncomingResult> {
    refuseUnencryptable(this.host, p);
    if ((await this.host.state.decision(p.migrationId)) !== null) {
      throw new FerryError('ERR_FERRY_REFUSED', `migration "${p.migrationId}" was already decided here`);
    }
    const nicFallback = p.guest.nic === 'sriov' && !this.host.state.config.hasSriov;
    const config = nicFallback ? { ...p.guest, nic: 'virtio' as const } : p.guest;
    const m = this.records.incoming(p.migrationId, config.name, p.source, { mode: p.mode, maxBytesPerSecond: p.maxBytesPerSecond });
    let release: (() => void) | null = null;
    try {
      release = await waitForSlot(this.host.incoming, m, signal, emit);
      if (p.sourceControl) {
        // Whom a restarted agent asks before it runs a commit it finds recorded (fence.ts).
        const source = { host: p.source, control: p.sourceControl };
        await this.host.state.writeIncoming({ migrationId: p.migrationId, guest: config.name, source });
        crashPoint('destination:after-incoming-record');
      }
      const dir = this.host.state.guestDir(config.name);
      const incoming = await this.host.guests.beginIncoming(config, { migrationId: p.migrationId, generation: p.generation ?? 0 }, () =>
        withKey(p, (key, nonce) =>
          startIncomingGuest(dir, config, {
            migrationId: p.migrationId,
            key,
            nonce,
            mode: p.mode,
            streams: p.streams,
            ...(p.maxBytesPerSecond ? { maxBytesPerSecond: p.maxBytesPerSecond } : {}),
            ...cryptoThreadsOf(this.host),
          }),
        ),
      );
      this.arriving.set(p.migrationId, incoming);
      this.host.log.info('incoming migration prepared', {
        migrationId: p.migrationId,
        guest: config.name,
        from: p.source,
        mode: p.mode,
        nicFallback,
      });
      const held = release;
      release = null; // from here the follower releases it
      void this.follow(m, incoming.client, held, p.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
      if (signal.aborted) {
        // The coordinator went before it had this answer, and it starts the source only with it:
        // no data will come, so the copy goes now ("not committed") rather than at a timeout.
        this.host.log.warn('the coordinator left before the incoming migration was prepared: giving it up', {
          migrationId: p.migrationId,
          guest: config.name,
        });
        void this.resolve(p.migrationId);
      }
      return { migrationId: p.migrationId, networks: this.host.networks(), nicFallback, guest: config };
    } catch (err) {
      m.phase = 'aborted';
      this.records.finish(m);
      this.records.delete(p.migrationId);
      throw err;
    } finally {
      release?.();
    }
  }

  /** Follows an incoming guest to its end, and has it decided. */
  private async follow(m: IncomingMigration, client: GuestClient, release: () => void, startTimeoutMs: number): Promise<void> {
    const { migrationId, guest } = m;
    const unstarted = setTimeout(() => {
      if (m.lastEvent !== null) return;
      this.host.log.warn('incoming migration never started: giving it up', { migrationId, guest, startTimeoutMs });
      void this.resolve(migrationId);
    }, startTimeoutMs).unref();
    try {
      const info = await client.awaitMigration((e) => noteEvent(m, e));
      if (info.phase === 'ready-to-commit') await commitOrDrop(this.host, m, client);
      else await this.drop(m, info);
    } catch (err) {
      if (this.stopped) return; // the agent is stopping: the next one decides (recovery.ts)
      // The guest process or its control connection is gone before a decision: not committed,
      // unless a commit was recorded, in which case the record stands and a restart finishes it.
      const decision = await decideNotCommitted(this.host, migrationId, guest).catch(() => null);
      this.host.log.error('incoming migration failed', { migrationId, guest, decision, err });
      if (decision === 'not-committed') {
        m.phase = 'aborted';
        await this.host.guests.forget(guest).catch(() => {});
      }
    } finally {
      clearTimeout(unstarted);
      this.arriving.delete(migrationId);
      this.records.finish(m);
      release();
    }
  }

  /** The incoming guest process ended without getting ready (it never runs the guest): "not committed", and it goes. */
  private async drop(m: IncomingMigration, info: MigrationInfo): Promise<void> {
    await decideNotCommitted(this.host, m.migrationId, m.guest);
    m.phase = 'aborted';
    m.result = info.result;
    await this.host.guests.forget(m.guest);
    this.host.log.warn('incoming migration aborted', { migrationId: m.migrationId, guest: m.guest, error: info.result?.error ?? null });
  }

  /** The coordinator gives the migration up: it leaves the queue if it waits there, and is resolved "not committed". */
  async giveUp(migrationId: string): Promise<ResolveDecision> {
    const m = this.records.get(migrationId);
    // Queued here, only a cancel from the coordinator gets this far (it gives up a prepared one otherwise).
    if (m?.phase === 'queued') m.leaveQueue.abort(cancelledError(true));
    return this.resolve(migrationId);
  }

  /**
   * The destination's answer to "what did you decide?": the recorded decision, or "not committed"
   * recorded now — final: an incoming guest still receiving is dropped, and a later commit refused.
   */
  async resolve(migrationId: string): Promise<ResolveDecision> {
    const decision = await decideNotCommitted(this.host, migrationId, this.records.get(migrationId)?.guest ?? '');
    const incoming = this.arriving.get(migrationId);
    if (decision === 'not-committed' && incoming) {
      // The follower sees the process go and cleans up.
      await incoming.client.destroy().catch(() => {});
    }
    this.host.log.info('migration resolved', { migrationId, decision });
    return decision;
  }

  /**
   * The source's operator fenced migration `migrationId` (told by the source's agent, or the
   * coordinator): recorded here, so that nothing of it ever commits or runs here, and this host's
   * copy goes. True when there was a copy to drop.
   */
  async learnFence(migrationId: string, peer: Peer): Promise<boolean> {
    const note = await this.host.state.readIncoming(migrationId);
    if (peer.role === 'host' && note?.source.host !== peer.name) {
      throw new FerryError('ERR_FERRY_REFUSED', `migration "${migrationId}" did not come from ${peer.name}: only its source may fence it`);
    }
    const guest = note?.guest ?? this.records.get(migrationId)?.guest ?? '';
    const before = await this.host.state.decision(migrationId);
    if (!note && before === null && !this.records.get(migrationId)) {
      throw new FerryError('ERR_FERRY_NOT_FOUND', `no migration "${migrationId}" came to host ${this.host.state.config.name}`);
    }
    await this.host.state.settle('fenced', migrationId, guest);
    await decideNotCommitted(this.host, migrationId, guest);
    const incoming = this.arriving.get(migrationId);
    if (incoming) {
      await incoming.client.destroy().catch(() => {});
      this.host.log.warn('incoming migration fenced by the operator at its source: dropped', { migrationId, guest });
      return true;
    }
    const record = guest ? await this.host.guests.recordOf(guest).catch(() => null) : null;
    if (!record || (record.incoming !== migrationId && before !== 'committed')) return false;
    // A copy that ran here although its source was fenced: the operator's precondition was false,
    // and two copies ran. The operator chose the source's.
    if (!record.incoming) this.host.log.error('a fenced migration had committed here: this copy is dropped', { migrationId, guest });
    await this.host.guests.forget(guest);
    return true;
  }

  stop(): void {
    this.stopped = true;
  }

  get isStopped(): boolean {
    return this.stopped;
  }
}
