/**
 * What a guest is, as the agent, the coordinator and the guest drivers all see it.
 */

export type GuestDriver = 'synthetic' | 'qemu';
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

export interface GuestConfig {
  name: string;
  driver: GuestDriver;
  memoryBytes: number;
  /** 0: no disk. */
  diskBytes: number;
  workload: Workload;
  nic: NicKind;
  encryptedMigration: EncryptedMigration;
}

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

/** Guest names: what can be a file name and a DNS label. */
export const GUEST_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
