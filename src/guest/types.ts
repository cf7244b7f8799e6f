/**
 * What a guest is, as the agent, the coordinator and the guest drivers all see it.
 */

/** The drivers ferry has (src/guest/drivers.ts). */
export type GuestDriverName = 'synthetic' | 'qemu';
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
  /**
   * Writes this many bytes a second to random pages (and disk blocks, when there is a disk);
   * `fill`: first writes all of memory and disk once, as a guest in use would have them.
   */
  | { kind: 'dirty'; bytesPerSecond: number; fill?: boolean };

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

/**
 * A QEMU/KVM virtual machine (src/guest/qemu): its command line is made from these fields alone
 * (src/guest/qemu/argv.ts), so both ends of a migration run the same machine.
 */
export interface QemuConfig extends GuestConfigBase {
  driver: 'qemu';
  cpus: number;
  /** The pinned QEMU machine type, e.g. pc-i440fx-7.2. */
  machine: string;
  /** Chosen at create: KVM only where it runs at speed, else TCG. */
  accel: 'kvm' | 'tcg';
  uuid: string;
  /** The files it boots from, kept in the guest directory (boot/kernel, boot/initrd). */
  kernel: { bytes: number; sha256: string };
  initrd?: { bytes: number; sha256: string };
  append: string;
  /** Its disks (src/guest/qemu/disks.ts), in the order of their virtio-blk devices; none when absent. */
  disks?: QemuDisk[];
  /** The exact QEMU command line without the binary, `{dir}` for the guest directory. */
  argv: string[];
}

/** A QEMU guest's disk as its config holds it: the same on every host it runs on (src/guest/qemu/disks.ts). */
export interface QemuDisk {
  format: 'raw' | 'qcow2';
  /** Virtual size: what the guest sees. */
  bytes: number;
  /** Both hosts see this image at this absolute path: a migration copies nothing of it. */
  shared?: string;
}

/** A disk as `ferry vm create` asks for it: a new qcow2 of `bytes`, or the image `file` in place. */
export interface QemuDiskRequest {
  bytes?: number;
  file?: string;
  shared: boolean;
}

export type GuestConfig = SyntheticConfig | QemuConfig;

/** What `ferry vm create` asks of a host: a synthetic guest's config as it is; a QEMU guest's, before its host chose the accelerator, a uuid and the files it boots from. */
export type GuestCreateRequest = SyntheticConfig | QemuCreateRequest;

export interface QemuCreateRequest extends GuestConfigBase {
  driver: 'qemu';
  cpus: number;
  /** auto: KVM where it runs at speed on the host, else TCG. */
  accel: 'auto' | 'kvm' | 'tcg';
  machine?: string;
  /** Absolute paths on the guest's host; without a kernel, ferry's own test guest. */
  kernel?: string;
  initrd?: string;
  append: string;
  /** Disks: a new qcow2 of a size, or an image in place (on shared storage or not). */
  disks?: QemuDiskRequest[];
}

/** Disk bytes of a guest (the synthetic driver's one image; a QEMU guest's disks' virtual sizes). */
export function diskBytesOf(config: GuestConfig): number {
  return config.driver === 'synthetic' ? config.diskBytes : (config.disks ?? []).reduce((sum, d) => sum + d.bytes, 0);
}

export interface GuestStatus {
  name: string;
  state: GuestState;
  pid: number;
  memoryBytes: number;
  diskBytes: number;
  /** Synthetic guests: what the workload does. */
  workload?: Workload;
  nic: NicKind;
  /** QEMU guests: the QEMU process's pid (pid is the ferry process that supervises it). */
  hypervisorPid?: number;
  /** Workload operations completed in the last second (GETs + SETs, or page writes). */
  opsPerSecond: number;
  /** 0 (not throttled) to 99: the share of time the workload is held back. */
  throttlePercent: number;
}
