/**
 * What the agent keeps about each migration it takes part in, one record type per role, and the
 * parts of the agent the migration code uses. A record lives from the request that started it (or
 * the restart that adopted it) until the agent stops; `migration.status` reads it.
 */
import { FerryError } from '../errors.js';
import type { GuestClient } from '../guest/index.js';
import type { Logger } from '../common/log.js';
import type { MigrationStatus, MigrationStreamEvent, WireChannelSpec } from '../control/protocol.js';
import { freshFigures, type JobFigures } from './migration-jobs.js';
import type { GuestManager } from './guests.js';
import type { SlotQueue } from './queue.js';
import type { StateDir } from './state.js';

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
  /** Told once about each migration that has ended here, however it ended (the metrics count them). */
  onEnded?: (m: TrackedMigration) => void;
}

/** What the coordinator's spec says of a migration's channel, as `migration.list` shows it; null when a restarted agent took it over. */
export type JobChannel = Pick<WireChannelSpec, 'mode' | 'maxBytesPerSecond'> | null;

interface Tracked extends MigrationStatus {
  /** Ends its wait in this host's queue. */
  leaveQueue: AbortController;
  /** The other end: the destination host (source role) or the source host (destination role). */
  peer: string;
  /** When the request came, ms since the epoch. */
  since: number;
  channel: JobChannel;
  /** Progress as the migration's events and data connections show it (migration-jobs.ts). */
  figures: JobFigures;
  /** Set once it has ended here: `migration.list` shows it no more. */
  over: boolean;
}

/** Destination: a guest arriving here. */
export interface IncomingMigration extends Tracked {
  role: 'destination';
}

/** Source: a guest leaving from here. */
export interface OutgoingMigration extends Tracked {
  role: 'source';
  /** Who decides, and whom to ask when the channel is lost before COMMITTED. */
  destination: { host: string; control: string };
  /** The guest process's control connection, once migrate-out went to it (a cancel follows on it). */
  guestClient: GuestClient | null;
  /** A cancel asked after the queue and before migrate-out went to the guest process. */
  cancelled: FerryError | null;
  /** Resolves when the migration has ended here, however it ended; null once it has. */
  ended: Promise<void> | null;
  /** Coordinators following it (`migration.follow`) besides the one that started it. */
  followers: Set<(e: MigrationStreamEvent) => void>;
  /** How it failed, when it ended with an error rather than an outcome (what a follower is answered). */
  failure: FerryError | null;
}

export type TrackedMigration = IncomingMigration | OutgoingMigration;

/** The operator's cancel, as the guest process's engine and the queue report it. */
export const cancelledError = (queued: boolean) =>
  new FerryError('ERR_FERRY_ABORTED', `cancelled by the operator${queued ? ' while queued' : ''}`);

/** Every migration this agent has heard of since it started, by id. */
export class MigrationRecords {
  private readonly byId = new Map<string, TrackedMigration>();

  constructor(private readonly onEnded?: (m: TrackedMigration) => void) {}

  get(migrationId: string): TrackedMigration | undefined {
    return this.byId.get(migrationId);
  }

  delete(migrationId: string): void {
    this.byId.delete(migrationId);
  }

  /** The outgoing migrations of guest `guest`, oldest first. */
  outgoingOf(guest: string): OutgoingMigration[] {
    return [...this.byId.values()].filter((m): m is OutgoingMigration => m.role === 'source' && m.guest === guest);
  }

  /** The migrations that have not ended here, oldest first. */
  active(): TrackedMigration[] {
    return [...this.byId.values()].filter((m) => !m.over);
  }

  /** It has ended here (once; a second call is a no-op). */
  finish(m: TrackedMigration): void {
    if (m.over) return;
    m.over = true;
    this.onEnded?.(m);
  }

  status(migrationId: string): MigrationStatus {
    const m = this.byId.get(migrationId);
    if (!m) throw new FerryError('ERR_FERRY_NOT_FOUND', `no migration "${migrationId}" known to this agent since it started`);
    const { migrationId: id, role, guest, phase, position, lastEvent, result } = m;
    return { migrationId: id, role, guest, phase, position, lastEvent, result };
  }

  incoming(migrationId: string, guest: string, source: string, channel: JobChannel): IncomingMigration {
    return this.add({ ...this.fresh(migrationId, guest, source, channel), role: 'destination' });
  }

  /** An outgoing migration, ended only when the returned `end` is called. */
  outgoing(
    migrationId: string,
    guest: string,
    destination: { host: string; control: string },
    channel: JobChannel,
  ): { migration: OutgoingMigration; end: () => void } {
    let end = (): void => {};
    const migration = this.add<OutgoingMigration>({
      ...this.fresh(migrationId, guest, destination.host, channel),
      role: 'source',
      destination,
      guestClient: null,
      cancelled: null,
      ended: new Promise<void>((resolve) => (end = resolve)),
      followers: new Set(),
      failure: null,
    });
    return {
      migration,
      end: () => {
        migration.ended = null;
        this.finish(migration);
        end();
      },
    };
  }

  private fresh(migrationId: string, guest: string, peer: string, channel: JobChannel): Omit<Tracked, 'role'> {
    return {
      migrationId,
      guest,
      phase: 'queued',
      position: null,
      lastEvent: null,
      result: null,
      leaveQueue: new AbortController(),
      peer,
      // eslint-disable-next-line no-restricted-properties -- when it began, a date shown to operators
      since: Date.now(),
      channel,
      figures: freshFigures(),
      over: false,
    };
  }

  private add<T extends TrackedMigration>(m: T): T {
    if (this.byId.has(m.migrationId)) throw new FerryError('ERR_FERRY_INPUT', `migration "${m.migrationId}" is already known here`);
    this.byId.set(m.migrationId, m);
    return m;
  }
}

/** Waits for a slot of `queue`, telling the caller its place; leaves the queue when `signal` or the record's leaveQueue aborts. */
export async function waitForSlot(
  queue: SlotQueue,
  m: TrackedMigration,
  signal: AbortSignal,
  emit: (e: { type: 'queued'; position: number }) => void,
): Promise<() => void> {
  const release = await queue.acquire({
    signal: AbortSignal.any([signal, m.leaveQueue.signal]),
    onPosition: (position) => {
      m.position = position;
      emit({ type: 'queued', position });
    },
  });
  m.position = null;
  m.phase = 'running';
  return release;
}

export function refuseUnencryptable(host: MigrationHost, spec: WireChannelSpec): void {
  if (spec.mode === 'encrypted' && !host.encrypts) {
    throw new FerryError(
      'ERR_FERRY_REFUSED',
      'this agent cannot encrypt (it runs with --no-encryption): the coordinator must not ask for an encrypted migration',
    );
  }
}

/** This host's limit for a migration's crypto, as the guest process's channel takes it (the agent's own, never the coordinator's). */
export function cryptoThreadsOf(host: MigrationHost): { cryptoThreads?: number } {
  return host.cryptoThreads === undefined ? {} : { cryptoThreads: host.cryptoThreads };
}
