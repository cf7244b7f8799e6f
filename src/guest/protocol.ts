/**
 * The guest control protocol, spoken over GUESTDIR/control.sock between an agent and its guest
 * process, whatever the driver behind it: src/common/rpc.ts's envelope, and this table of methods
 * with the check each method's params pass before any handler sees them (a field a method does
 * not take is refused: a misspelt or newer option must not be dropped in silence).
 *
 * Secrets (a migration's key and nonce) never travel inside JSON, where they would become
 * immutable strings nobody can wipe: the two keyed methods take them as a secret trailer of
 * exactly SECRET_BYTES raw bytes after the request line (src/common/json-lines.ts).
 */
import { FerryError } from '../errors.js';
import type { LineLimits } from '../common/json-lines.js';
import { MIGRATION_ID, MIGRATION_ID_RULE } from '../common/names.js';
import { KEY_BYTES, NONCE_BYTES, SECRET_BYTES } from '../common/secrets.js';
import { array, bool, int, obj, oneOf, optional, str, type Check } from '../common/validate.js';
import { MAX_THREADS } from '../crypto/backend.js';
import type { ChannelMode } from '../channel/types.js';
import type { ChannelParams, MigrationEvent, OutgoingSpec } from '../migration/types.js';
import type { ConsoleChunk } from './console.js';
import type { MigrationInfo } from './migration-tracker.js';
import type { GuestStatus } from './types.js';

export const PROTOCOL_VERSION = 1;
export const MAX_LINE_BYTES = 64 * 1024;
export const MAX_SECRET_BYTES = 64;
/** The guest protocol's framing: lines up to MAX_LINE_BYTES, trailers up to MAX_SECRET_BYTES. */
export const GUEST_LINES: LineLimits = { maxLineBytes: MAX_LINE_BYTES, maxSecretBytes: MAX_SECRET_BYTES };
/** A reply line as the agent accepts it (status replies carry the last event and result). */
export const MAX_REPLY_BYTES = 4 * 1024 * 1024;

export interface GuestHello {
  protocol: number;
  pid: number;
  name: string;
  /** Started to receive a migration. */
  incoming: boolean;
}

export interface GuestStatusReport extends GuestStatus {
  /** The workload finished its one-time setup (idle: memory filled; kv: keys loaded). */
  workloadReady: boolean;
  /** The current or last migration of this guest process, if any. */
  migration: MigrationInfo | null;
}

/** migrate-out's params: the outgoing spec without its key and nonce (those are the trailer). */
export type MigrateOutParams = Omit<OutgoingSpec, 'key' | 'nonce'>;
/** prepare-incoming's params: the channel half of the spec without key and nonce. */
export type PrepareIncomingParams = Omit<ChannelParams, 'key' | 'nonce'>;

type Empty = Record<string, never>;

/** Every method: its params, its result, and the events a long call sends before its result. */
export interface GuestMethods {
  hello: { params: Empty; result: GuestHello; event: never };
  status: { params: Empty; result: GuestStatusReport; event: never };
  /** Returns once the guest has stopped running. */
  pause: { params: Empty; result: GuestStatus; event: never };
  resume: { params: Empty; result: GuestStatus; event: never };
  /** Holds the guest back `percent` (0-99) of the time. Refused while a migration runs. */
  throttle: { params: { percent: number }; result: GuestStatus; event: never };
  /**
   * The guest's serial console log from byte `offset`, one bounded chunk (console.ts); refused
   * (ERR_FERRY_INPUT) by a guest that has no serial console.
   */
  console: { params: { offset: number }; result: ConsoleChunk; event: never };
  /** A digest of the guest's memory then disk, meaningful while paused (docs/migration.md). */
  digest: { params: Empty; result: { digest: string; algorithm: string }; event: never };
  stop: { params: Empty; result: { stopped: true }; event: never };
  destroy: { params: Empty; result: { destroyed: true }; event: never };
  /** Source: migrates the guest out; events until it settles (keyed). */
  'migrate-out': { params: MigrateOutParams; result: MigrationInfo; event: MigrationEvent };
  /** Source: cancels the outgoing migration before its switch-over (the operator's, by default). */
  'cancel-migration': {
    params: { migrationId: string; reason?: CancelReason };
    result: { migrationId: string; cancelled: true };
    event: never;
  };
  /** Destination: readies an incoming guest process for its migration (keyed). */
  'prepare-incoming': { params: PrepareIncomingParams; result: { migrationId: string }; event: never };
  migration: { params: Empty; result: MigrationInfo | null; event: never };
  /** Follows the migration in progress until it settles. */
  'await-migration': { params: Empty; result: MigrationInfo; event: MigrationEvent };
  /** Destination, ready-to-commit, after the agent recorded ownership durably: run the guest here. */
  commit: { params: Empty; result: MigrationInfo; event: never };
  /** Destination, ready-to-commit: do not run it; the incoming guest process exits. */
  abort: { params: Empty; result: MigrationInfo; event: never };
  /** Source in doubt, once the destination's agent said "not committed": run the guest here again. */
  'resume-after-abort': { params: Empty; result: GuestStatus; event: never };
  /** Source migrated or in doubt, once the destination's agent said "committed": this copy exits. */
  finish: { params: Empty; result: { finished: true }; event: never };
}

export type GuestMethod = keyof GuestMethods;
export type GuestParams<M extends GuestMethod> = GuestMethods[M]['params'];
export type GuestResult<M extends GuestMethod> = GuestMethods[M]['result'];
export type GuestEvent<M extends GuestMethod> = GuestMethods[M]['event'];

/** The methods that take the migration's key and nonce as their secret trailer. */
export const KEYED_GUEST_METHODS: ReadonlySet<GuestMethod> = new Set(['migrate-out', 'prepare-incoming']);

const empty = obj({}) as Check<Empty>;
/**
 * Why an outgoing migration is cancelled: the operator's `ferry cancel`, or its destination's agent
 * recorded "not committed" (it restarted without the incoming guest, so nothing can arrive there).
 */
export type CancelReason = 'operator' | 'destination-dropped';

const channelFields = {
  migrationId: str({ pattern: MIGRATION_ID, describe: `a migration id (${MIGRATION_ID_RULE})` }),
  mode: oneOf<ChannelMode>(['encrypted', 'plain']),
  streams: int({ min: 1, max: 16 }),
  maxBytesPerSecond: optional(int({ min: 1 })),
  cryptoThreads: optional(int({ min: 1, max: MAX_THREADS })),
};
const millis = (max: number) => optional(int({ min: 1, max }));

export const GUEST_PARAMS: { [M in GuestMethod]: Check<GuestParams<M>> } = {
  hello: empty,
  status: empty,
  pause: empty,
  resume: empty,
  throttle: obj({ percent: int({ min: 0, max: 99 }) }),
  console: obj({ offset: int({ min: 0, max: Number.MAX_SAFE_INTEGER }) }),
  digest: empty,
  stop: empty,
  destroy: empty,
  'migrate-out': obj({
    ...channelFields,
    networks: array(str({ max: 300 }), 16, 1),
    maxDowntimeMs: millis(3_600_000),
    timeoutMs: millis(7 * 24 * 3_600_000),
    autoConverge: optional(bool),
    verify: optional(bool),
    commitTimeoutMs: millis(24 * 3_600_000),
    removeSourceDisks: optional(bool),
  }),
  'cancel-migration': obj({
    migrationId: channelFields.migrationId,
    reason: optional(oneOf<CancelReason>(['operator', 'destination-dropped'])),
  }),
  'prepare-incoming': obj(channelFields),
  migration: empty,
  'await-migration': empty,
  commit: empty,
  abort: empty,
  'resume-after-abort': empty,
  finish: empty,
};

export function isGuestMethod(name: string): name is GuestMethod {
  return Object.prototype.hasOwnProperty.call(GUEST_PARAMS, name);
}

/**
 * The key and nonce of a keyed request, as copies the handler owns (the request's trailer is wiped
 * when its handler settles); ERR_FERRY_INPUT when the trailer is missing or of another size.
 */
export function keyOfTrailer(secret: Buffer | null): { key: Buffer; nonce: Buffer } {
  if (!secret || secret.length !== SECRET_BYTES) {
    throw new FerryError(
      'ERR_FERRY_INPUT',
      `the request must carry the ${KEY_BYTES}-byte key and ${NONCE_BYTES}-byte nonce as its secret trailer`,
    );
  }
  return { key: Buffer.from(secret.subarray(0, KEY_BYTES)), nonce: Buffer.from(secret.subarray(KEY_BYTES)) };
}
