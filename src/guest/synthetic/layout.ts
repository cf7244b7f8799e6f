/**
 * The fixed geometry of a synthetic guest, shared by the guest process, its workload worker and
 * the migration engine (the destination checks the source's values in BEGIN).
 */

/** Guest page: the unit of the memory dirty log and of memory transfer, as x86's small page. */
export const PAGE_SIZE = 4096;
/** Disk block: the unit of the disk dirty log and of disk transfer. */
export const BLOCK_SIZE = 64 * 1024;
/**
 * Memory slot: one SharedArrayBuffer. Node 20 Buffers stop at 4 GiB and a slot mirrors a KVM
 * memory slot; 1 GiB keeps every page index inside one slot and every view a plain Uint8Array.
 */
export const SLOT_SIZE = 1 << 30;
export const PAGES_PER_SLOT = SLOT_SIZE / PAGE_SIZE;

/** Largest guest this driver runs: 64 slots. Page indexes stay far below 2^32. */
export const MAX_MEMORY_BYTES = 64 * SLOT_SIZE;
/** Largest disk: block indexes stay below 2^32 and file offsets within safe integers. */
export const MAX_DISK_BYTES = 2 ** 44;

/**
 * Indexes into the control block (an Int32Array over a SharedArrayBuffer) through which the
 * guest process drives its workload worker. Every access is an Atomics operation.
 */
export const CTL = {
  /** RUN_* : what the guest process asks of the worker. */
  RUN: 0,
  /**
   * The pause epoch the worker last acknowledged as halted. Each pause raises EPOCH first, so a
   * stale acknowledgement of an earlier pause (the worker resumed since) never passes for this one.
   */
  HALTED: 1,
  /** 0-99: share of time the workload is held back. */
  THROTTLE: 2,
  /** Operations done since start, low 31 bits (wraps; the guest process reads differences). */
  OPS: 3,
  /** 1 once the worker has finished its one-time setup (idle fill, kv preload). */
  READY: 4,
  /** Length in bytes of the device state the worker published in the state buffer. */
  STATE_LENGTH: 5,
  /** Raised by the guest process for every pause request. */
  EPOCH: 6,
} as const;
export const CTL_WORDS = 8;

export const RUN_GO = 0;
export const RUN_PAUSE = 1;
export const RUN_STOP = 2;

/** Room for the workload's device state (JSON), published by the worker when it halts. */
export const STATE_BYTES = 4096;

export function pageCountOf(memoryBytes: number): number {
  return Math.ceil(memoryBytes / PAGE_SIZE);
}

export function blockCountOf(diskBytes: number): number {
  return Math.ceil(diskBytes / BLOCK_SIZE);
}
