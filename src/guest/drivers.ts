/** The guest drivers ferry has: the one place that names them (src/guest/driver.ts is the contract). */
import type { GuestDriver } from './driver.js';
import { syntheticDriver } from './synthetic/driver.js';
import type { GuestDriverName } from './types.js';

export const DRIVERS: Readonly<Record<GuestDriverName, GuestDriver>> = {
  synthetic: syntheticDriver,
};

export function isDriverName(name: unknown): name is GuestDriverName {
  return typeof name === 'string' && Object.prototype.hasOwnProperty.call(DRIVERS, name);
}

export function driverOf(name: GuestDriverName): GuestDriver {
  return DRIVERS[name];
}
