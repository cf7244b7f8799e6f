/**
 * The migration engine's contract: what it needs from a guest on each side, what the caller (a
 * guest process, for its agent) passes in, and the events and result it reports.
 */
import type { ChannelFailover, ChannelSpec } from '../channel/types.js';
import type { VerifyReport } from './verify.js';

/** A guest's shape; source and destination must agree on all of it (checked in BEGIN). */
export interface GuestGeometry {
  readonly memoryBytes: number;
  readonly diskBytes: number;
  readonly pageSize: number;
  readonly blockSize: number;
  readonly pageCount: number;
  readonly blockCount: number;
}

/** What the source side of the engine reads and drives. */
export interface SourceGuest extends GuestGeometry {
  /** A view (no copy) of a run of pages inside one slot. */
  memoryPages(first: number, count: number): Uint8Array;
  /** The longest run from `first`, of at most `max` pages, that memoryPages accepts. */
  pageRunLimit(first: number, max: number): number;
  /** Reads a run of disk blocks into `into`, returning the bytes read. */
  readBlocks(first: number, count: number, into: Uint8Array): Uint8Array;
  /** Fetches and clears the dirty logs (ascending indexes). */
  harvestDirtyPages(): Uint32Array;
  harvestDirtyBlocks(): Uint32Array;
  /** How much is dirty now, without clearing. */
  countDirtyPages(): number;
  countDirtyBlocks(): number;
  clearDirtyLogs(): void;
  /** Returns once the workload has stopped writing. */
  pause(): Promise<void>;
  resume(): void;
  readonly throttlePercent: number;
  setThrottle(percent: number): void;
  /** The workload's state, valid while paused: small JSON. */
  deviceState(): object;
  digest(): Promise<string>;
}

/** What the destination side writes into. */
export interface DestinationGuest extends GuestGeometry {
  memoryPages(first: number, count: number): Uint8Array;
  pageRunLimit(first: number, max: number): number;
  writeBlocks(first: number, count: number, data: Uint8Array): void;
  readBlocks(first: number, count: number, into: Uint8Array): Uint8Array;
  digest(): Promise<string>;
  /**
   * Test only (FERRY_TEST_CORRUPT_PAGE, docs/migration.md): told when memory pages have landed
   * (`zero`: a zero marker), before verify hashes them, so that a test can damage one.
   */
  pagesLanded?(first: number, count: number, zero: boolean): void;
}

/**
 * The channel half of a migration spec, as the guest process receives it from its agent. The key
 * (32 bytes) and nonce (8) are wiped by the guest process once the channel has its copy.
 */
export type ChannelParams = Pick<ChannelSpec, 'migrationId' | 'key' | 'nonce' | 'mode' | 'streams' | 'maxBytesPerSecond' | 'cryptoThreads'>;

/** What the source agent passes to GuestClient.migrateOut. */
export interface OutgoingSpec extends ChannelParams {
  /** The destination's migration networks, `host:port`, in preference order. */
  networks: string[];
  /** Switch over when the estimated pause fits this; default 500 ms. */
  maxDowntimeMs?: number;
  /** Give up (the guest keeps running here) after this long in pre-copy; default 10 minutes. */
  timeoutMs?: number;
  /** Throttle the guest step by step when it dirties faster than the link drains; default true. */
  autoConverge?: boolean;
  /** Compare the chunk hashes of what the source sent and the destination holds before committing (verify.ts). */
  verify?: boolean;
  /** How long to wait, paused, for the destination's answer before declaring the outcome in doubt; default 60 s. */
  commitTimeoutMs?: number;
  /** A QEMU guest's images at the source, after a commit: deleted (default: kept, and the result says where). */
  removeSourceDisks?: boolean;
}

/** What the destination agent passes to startIncomingGuest. */
export type IncomingSpec = ChannelParams;

export const DEFAULT_MAX_DOWNTIME_MS = 500;
export const DEFAULT_TIMEOUT_MS = 10 * 60_000;
export const DEFAULT_COMMIT_TIMEOUT_MS = 60_000;

export interface PassReport {
  pass: number;
  pages: number;
  zeroPages: number;
  blocks: number;
  zeroBlocks: number;
  bytes: number;
  durationMs: number;
}

export type MigrationEvent =
  | {
      type: 'pass';
      pass: number;
      /** Payload bytes the destination has acknowledged so far (not those still in the send window). */
      bytesSent: number;
      /** Bytes of this pass not yet acknowledged (synthetic guests), or QEMU's remaining RAM. */
      bytesLeft: number;
      /** Bytes a second acknowledged since the previous event of the pass (at most the link's cap). */
      throughput: number;
      dirtyRate: number;
      zeroPagesSkipped: number;
      throttlePercent: number;
      elapsedMs: number;
    }
  | { type: 'throttle'; percent: number }
  /** The source's channel moved to the destination's next migration network, and carries on there. */
  | ({ type: 'failover' } & ChannelFailover)
  /** A QEMU guest's disk mirrors (apart from memory): bytes copied of those to copy, mirrors in sync. */
  | { type: 'disks'; bytesDone: number; bytesTotal: number; ready: number; disks: number; elapsedMs: number }
  | { type: 'switch-over'; bytesLeft: number; estimatedDowntimeMs: number }
  | { type: 'progress'; role: 'destination'; pass: number; bytesReceived: number }
  | { type: 'ready-to-commit'; sourceDigest: string | null; digest: string | null }
  | { type: 'committed'; downtimeMs: number | null }
  | { type: 'in-doubt'; code: string; message: string }
  | { type: 'aborted'; code: string; message: string };

export type MigrationOutcome = 'committed' | 'aborted' | 'in-doubt';

export interface MigrationResult {
  migrationId: string;
  role: 'source' | 'destination';
  outcome: MigrationOutcome;
  error: { code: string; message: string } | null;
  passes: PassReport[];
  totalMs: number;
  /** Source: from pause to COMMITTED. Destination: null. */
  downtimeMs: number | null;
  bytesSent: number;
  bytesReceived: number;
  zeroPagesSkipped: number;
  /** Payload bytes a second over the whole migration. */
  throughput: number;
  throttlePercent: number;
  sourceDigest: string | null;
  destinationDigest: string | null;
  /** When verifying: the scheme, the chunks compared and hashed, the first that differed (verify.ts). */
  verification?: VerifyReport | null;
  cpu: { userMs: number; systemMs: number };
  /** This side's channel: the threads each seal/open was allowed (null: every core) and the most one ran on (0: plain). */
  cryptoThreads: { limit: number | null; peak: number };
  /**
   * Destination: DATA payload buffers its pool allocated (fresh memory) and served again; null at
   * the source, or without a pool.
   */
  payloadBuffers: { allocated: number; reused: number } | null;
  /** Destination: DATA messages the channel opened straight into guest memory (in-place.ts); null at the source. */
  openedInPlace: number | null;
  /** Source: the link's round trip, BEGIN to BEGIN_OK, in ms, which the switch-over estimate adds; null at the destination or before it was measured. */
  roundTripMs: number | null;
  /** Bytes this side's channel wrote and read on its sockets, headers and tags included. */
  wireBytes?: { sent: number; received: number };
  /** The channel's key epochs: this side's sending at the end, and the highest the peer's frames reached. */
  keyEpochs?: { sent: number; received: number };
  /** A QEMU guest's source: QEMU's own figures of the migration, beside ferry's. */
  hypervisor?: HypervisorFigures | null;
  /** A QEMU guest with disks: what crossed of them, apart from memory, their digests, and the source's images after it. */
  disks?: DiskMigrationFigures | null;
  /** Source: each move of the channel to another migration network, in order. */
  failovers?: ChannelFailover[];
}

export interface DiskMigrationFigures {
  /** Disk bytes the mirrors copied (QEMU's block job offsets); memory is hypervisor.ramBytes. */
  bytes: number;
  /** Virtual bytes of the disks copied, and of those on shared storage (not copied). */
  mirroredBytes: number;
  sharedBytes: number;
  disks: { index: number; bytes: number; shared: boolean; mirroredBytes: number }[];
  /** Source: ms until every mirror was in sync, before memory started. */
  readyMs: number | null;
  /** --verify: each disk's digest on each side (null: shared storage, one file), or why there are none. */
  digests?: { algorithm: string; source: (string | null)[] | null; destination: (string | null)[] | null; unavailable?: string };
  /** Source, after a commit: what became of its images. */
  sourceImages?: { index: number; action: 'kept' | 'removed' | 'shared'; path: string }[];
}

export interface HypervisorFigures {
  kind: 'qemu';
  version: string;
  /** QEMU's total-time, downtime and setup-time. */
  totalMs: number;
  downtimeMs: number | null;
  setupMs: number | null;
  /** RAM bytes QEMU sent, its zero pages (sent as markers), and its passes (dirty-log syncs). */
  ramBytes: number;
  zeroPages: number;
  dirtySyncCount: number;
  /** --verify: how long the RAM digests held the guest paused beyond QEMU's downtime. */
  verifyMs: number | null;
}
