/** The guest drivers ferry has: the one place that names them (src/guest/driver.ts is the contract). */
import type { GuestDriver } from './driver.js';
import { qemuDriver } from './qemu/driver.js';
import { syntheticDriver } from './synthetic/driver.js';
import { formatBytes } from '../common/units.js';
import type { GuestConfig, GuestDriverName } from './types.js';

export const DRIVERS: Readonly<Record<GuestDriverName, GuestDriver>> = {
  synthetic: syntheticDriver,
  qemu: qemuDriver,
};

export function isDriverName(name: unknown): name is GuestDriverName {
  return typeof name === 'string' && Object.prototype.hasOwnProperty.call(DRIVERS, name);
}

export function driverOf(name: GuestDriverName): GuestDriver {
  return DRIVERS[name];
}

/** A guest in a few words: its memory, then what its driver says of it. */
export function describeGuest(config: GuestConfig): string {
  const rest = DRIVERS[config.driver].describe(config);
  return `${formatBytes(config.memoryBytes)} memory${rest ? `, ${rest}` : ''}`;
}
