/**
 * One migration, as the coordinator runs it: find the guest, read both agents' capabilities over
 * mTLS, decide the mode (preflight.ts), draw a fresh key, hand the spec to the destination
 * (prepare-incoming) and then the source (start-outgoing), follow the events, and wipe the key
 * (migration-run.ts, whose stages also say what the operator's cancel does). A library, so
 * `ferry migrate`, `ferry evacuate` and `ferry demo` share it, and tests can run it in-process.
 *
 * Errors before anything was asked of an agent (no such guest, a host that cannot take it, a
 * required guest and a host that cannot encrypt) are thrown. Once a spec went out, the outcome is
 * a MigrationReport with ok:false and the error: the guest still runs on the source — or, with
 * ERR_FERRY_DETACHED, the source's agent could not be reached again to follow it, and the
 * migration may still run (follow.ts). A lost connection to the source's agent alone is no end.
 */
import type { MigrationStreamEvent } from '../control/protocol.js';
import type { EncryptedMigration } from '../guest/types.js';
import type { ChannelMode } from '../channel/types.js';
import type { Cluster } from './cluster.js';
import type { MigrationKey } from './keys.js';
import { MigrationRun } from './migration-run.js';
import { planMigration } from './preflight.js';
import type { Target } from './target.js';

export { PreflightError, preflightReport } from './preflight.js';
export { DEFAULT_STREAMS } from './migration-run.js';

export interface MigrateRequest {
  guest: string;
  /** The cluster the guest is in now. */
  cluster: Cluster;
  to: Target;
  /** The source host when the caller knows it (evacuate); otherwise every host is asked. */
  from?: string;
  /** Overrides the guest's encrypted-migration setting. */
  mode?: EncryptedMigration;
  streams?: number;
  maxDowntimeMs?: number;
  maxBytesPerSecond?: number;
  timeoutMs?: number;
  verify?: boolean;
  /** A QEMU guest's images at the source, after a commit: deleted rather than kept. */
  removeSourceDisks?: boolean;
  /** Time the caller's own queue held this migration before it asked (evacuate): counted into queuedMs. */
  queuedMs?: number;
}

/** What the coordinator tells its caller while a migration runs. */
export type CoordinatorEvent =
  | {
      type: 'decided';
      vm: string;
      from: string;
      to: string;
      mode: ChannelMode;
      streams: number;
      memoryBytes: number;
      diskBytes: number;
      warning: string | null;
    }
  /** The operator's cancel went to the agents; the result says how it ended. */
  | { type: 'cancelling'; vm: string; side: 'coordinator' }
  /** The source agent could not cancel now (switch-over under way, in doubt): the migration ends by itself. */
  | { type: 'cancel-refused'; vm: string; side: 'coordinator'; code: string; message: string }
  /** The destination gives the guest an emulated NIC in place of its passthrough one: said before the move starts. */
  | { type: 'nic-fallback'; vm: string; side: 'coordinator'; host: string; nic: 'virtio' }
  /** The connection to the source's agent was lost: reaching it again to follow the migration there (attempt 1, 2, ...). */
  | { type: 'reconnecting'; vm: string; side: 'coordinator'; host: string; attempt: number; error: string }
  /**
   * Committed, and then the destination does not list the guest running (its process killed or
   * crashed right after the commit): it moved, and was lost there as in a crash of that host.
   */
  | { type: 'not-running'; vm: string; side: 'coordinator'; host: string; state: string }
  | ({ vm: string; side: 'source' | 'destination' } & MigrationStreamEvent);

export interface MigrateHooks {
  onEvent?: (event: CoordinatorEvent) => void;
  /**
   * Where the migration's key comes from (default: MigrationKey.generate). Only in-process callers
   * can pass one: the key-leak tests keep a copy to search for. The CLI has no way to set it.
   */
  newKey?: () => MigrationKey;
  /**
   * Aborted: cancel the migration. While the destination prepares, it is told to give up; once
   * the source runs it, the source agent cancels it (`migration.cancel`): in pre-copy the guest
   * stays on the source and the result is ok:false, ERR_FERRY_ABORTED; from the switch-over on it
   * is refused (a 'cancel-refused' event) and the migration ends by itself. By stage: migration-run.ts,
   * "the cancel rule".
   */
  cancel?: AbortSignal;
  /**
   * Aborted: stop following at once. The connections to the agents close and the migration
   * carries on by itself (a migration still queued at an agent leaves that queue: it never
   * started); the result is ok:false, ERR_FERRY_DETACHED.
   */
  detach?: AbortSignal;
}

/** `ferry migrate --json`'s last line: exactly these fields. */
export interface MigrationReport {
  type: 'result';
  ok: boolean;
  vm: string;
  from: string;
  to: string;
  mode: ChannelMode;
  backend: string;
  totalMs: number;
  switchoverMs: number | null;
  bytesSent: number;
  zeroPagesSkipped: number;
  passes: number;
  verified: boolean | null;
  /** --verify: ms its hashing or digests held the pause; null without it. */
  verifyMs: number | null;
  /** Ms the migration waited in a queue (the coordinator's, an agent's) before it started; not in totalMs. */
  queuedMs: number;
  /** The guest lost its passthrough NIC for an emulated one at the destination. */
  nicFallback: boolean;
  /** Each move of the data to the destination's next migration network, in order. */
  failovers: { from: string; to: string; bytesResent: number }[];
  error: { code: string; message: string } | null;
  /**
   * A QEMU guest with disks only: disk bytes the mirrors copied apart from memory bytes (QEMU's
   * RAM figure), the disks' virtual bytes copied and left on shared storage, and after a commit
   * what became of the source's images.
   */
  disks?: {
    bytes: number;
    memoryBytes: number;
    mirroredBytes: number;
    sharedBytes: number;
    /** --verify: the disks' digests matched (the destination commits only then); null without --verify. */
    verified: boolean | null;
    sourceImages: { index: number; action: 'kept' | 'removed' | 'shared'; path: string }[] | null;
  };
}

/** The report and what people are shown besides. */
export interface MigrationSummary {
  report: MigrationReport;
  migrationId: string;
  /** Payload bytes a second over the whole migration. */
  throughput: number;
  /** The data link's round trip as the source's engine measured it (which every pause holds); null when it never ran. */
  roundTripMs: number | null;
  warning: string | null;
  /** The exit status of a failed migration (1, or 2 when an agent found the request bad). */
  exitCode: 0 | 1 | 2;
}

/** Runs one migration to its end. Throws (a PreflightError) only for problems found before any spec went out. */
export async function migrateGuest(req: MigrateRequest, hooks: MigrateHooks = {}): Promise<MigrationSummary> {
  return new MigrationRun(req, await planMigration(req), hooks).run();
}
