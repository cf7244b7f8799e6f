/**
 * The guest driver contract: what a kind of guest must provide so that the agent can run it and
 * the migration can move it. A driver is two halves that meet at the guest control protocol
 * (protocol.ts):
 *
 * - in the agent (this interface): its config fields, the guest process entry, and whether this
 *   host can run such guests;
 * - in the guest process it runs (the entry): the protocol's handlers (control-server.ts) — create,
 *   status, pause/resume, digest where it can, the migration out and in with the commit hand-off.
 *
 * Every driver passes one conformance suite (test/guest/conformance.test.ts). src/guest/drivers.ts
 * is the one place that names the drivers.
 */
import type { Check } from '../common/validate.js';
import type { GuestDriverName } from './types.js';

export interface DriverAvailability {
  available: boolean;
  /** Why not, in words an operator can act on; or what it runs with ("QEMU 7.2.22, TCG"). */
  detail: string;
}

export interface GuestDriver {
  readonly name: GuestDriverName;
  /** The driver's config fields, memoryBytes among them (the common ones are config.ts's). */
  readonly configFields: Record<string, Check<unknown>>;
  /** The compiled guest process entry: `node ENTRY GUESTDIR [--incoming]`. */
  entry(): string;
  /** Whether this host can run guests of this driver. */
  availability(): Promise<DriverAvailability>;
}
