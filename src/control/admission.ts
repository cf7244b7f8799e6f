/**
 * Memory admission, the one rule the agent enforces and the coordinator plans with: a host takes a
 * guest (created there, or as a migration's destination) only when the guest's memory fits in
 * what the host has free less the reserve it keeps for itself (the kernel, page cache, the agent
 * and its guest processes' own overhead). The reserve is a host setting (`ferry host init
 * --memory-reserve SIZE`, default DEFAULT_MEMORY_RESERVE_BYTES) that capabilities advertise.
 * docs/operations.md, "Memory admission".
 */
import { formatBytes } from '../common/units.js';

/** What a host keeps for itself unless `host init --memory-reserve` says otherwise. */
export const DEFAULT_MEMORY_RESERVE_BYTES = 2 ** 30;

export interface HostMemory {
  /** The host's name, for the message. */
  host: string;
  freeMemoryBytes: number;
  /** Absent from agents older than the reserve: they keep the default. */
  memoryReserveBytes?: number;
}

/** The memory a host can give guests now. */
export function memoryForGuests(host: HostMemory): number {
  return Math.max(0, host.freeMemoryBytes - (host.memoryReserveBytes ?? DEFAULT_MEMORY_RESERVE_BYTES));
}

/**
 * Why `host` cannot take a guest of `guestBytes`, or null when it can. `needs` says the guest's
 * size in the operator's terms: `guest "web1" needs 1 GiB`, `--memory 40GiB`.
 */
export function memoryRefusal(host: HostMemory, guestBytes: number, needs: string): string | null {
  const room = memoryForGuests(host);
  if (guestBytes <= room) return null;
  const reserve = host.memoryReserveBytes ?? DEFAULT_MEMORY_RESERVE_BYTES;
  return (
    `host ${host.host} has ${formatBytes(host.freeMemoryBytes)} free and keeps ${formatBytes(reserve)} of it for itself ` +
    `(host init --memory-reserve), which leaves ${formatBytes(room)} for guests; ${needs}`
  );
}
