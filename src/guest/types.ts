/**
 * What a guest is, as the agent, the coordinator and the guest drivers all see it.
 */

/** The drivers ferry has (src/guest/drivers.ts). */
export type GuestDriverName = 'synthetic';
/**
 * `migrating`: pre-copy or switch-over in progress (running, or paused for switch-over).
 * `incoming`: a destination guest receiving a migration; it runs only once committed.
 * `in-doubt`: paused after switch-over without the destination's answer; it resumes only when the
 * destination's agent says "not committed" (resumeAfterAbort), or stops when it says committed.
 * `migrated`: paused for good: the destination committed; the agent stops it.
 */
export type GuestState = 'running' | 'paused' | 'migrating' | 'incoming' | 'in-doubt' | 'migrated' | 'stopped';
export type EncryptedMigration = 'disabled' | 'opportunistic' | 'required';
export type NicKind = 'virtio' | 'sriov';

export type Workload =
  | { kind: 'idle' }
  /** A key-value store in guest memory serving this many GETs and SETs a second on random keys. */
  | { kind: 'kv'; getsPerSecond: number; setsPerSecond: number }
  /** Writes this many bytes a second to random pages (and disk blocks, when there is a disk). */
  | { kind: 'dirty'; bytesPerSecond: number };

/** What every guest's config has, whatever its driver. */
export interface GuestConfigBase {
  name: string;
  driver: GuestDriverName;
  memoryBytes: number;
  nic: NicKind;
  encryptedMigration: EncryptedMigration;
}

/** A synthetic guest: a ferry process with real memory, an optional disk and a workload. */
export interface SyntheticConfig extends GuestConfigBase {
  driver: 'synthetic';
  /** 0: no disk. */
  diskBytes: number;
  workload: Workload;
}

export type GuestConfig = SyntheticConfig;

export interface GuestStatus {
  name: string;
  state: GuestState;
  pid: number;
  memoryBytes: number;
  diskBytes: number;
  workload: Workload;
  nic: NicKind;
  /** Workload operations completed in the last second (GETs + SETs, or page writes). */
  opsPerSecond: number;
  /** 0 (not throttled) to 99: the share of time the workload is held back. */
  throttlePercent: number;
}

