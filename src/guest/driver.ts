/**
 * The guest driver contract: what a kind of guest must provide so that the agent can run it and
 * the migration can move it. A driver is two halves that meet at the guest control protocol
 * (protocol.ts):
 *
 * - in the agent (this interface): its config fields, the guest process entry, and whether this
 *   host can run such guests;
 * - in the guest process it runs (the entry, on guest-process.ts, which does the rest of being a
 *   guest process): the protocol's handlers (control-server.ts) — status, pause/resume, digest
 *   where it can, the migration out and in with the commit hand-off.
 *
 * Every driver passes one conformance suite (test/guest/conformance.test.ts). src/guest/drivers.ts
 * is the one place that names the drivers.
 */
import type { Check } from '../common/validate.js';
import type { GuestConfig, GuestCreateRequest, GuestDriverName } from './types.js';

export interface DriverAvailability {
  available: boolean;
  /** Why not, in words an operator can act on; or what it runs with ("QEMU 7.2.22, TCG"). */
  detail: string;
  /** A driver that runs a hypervisor: its version here ("7.2.22"), when one answered. */
  version?: string;
  /** What its guests run on here ("kvm", "tcg"), when it can run any. */
  accelerator?: string;
}

export interface GuestDriver {
  readonly name: GuestDriverName;
  /** The driver's config fields, memoryBytes among them (the common ones are config.ts's). */
  readonly configFields: Record<string, Check<unknown>>;
  /** The fields of a request to create such a guest (`ferry vm create`), besides the common ones. */
  readonly createFields: Record<string, Check<unknown>>;
  /**
   * On the host that will run it: the guest's whole config from a checked create request, with
   * whatever the guest needs placed in `dir` (0700, made by the caller). Refuses (a coded error)
   * what this host cannot run.
   */
  create(request: GuestCreateRequest, dir: string): Promise<GuestConfig>;
  /** True when the guest in `dir` still runs though its guest process is gone (the agent then starts one to adopt it). */
  outlivesProcess(dir: string, config: GuestConfig): boolean;
  /**
   * Ends what of the guest in `dir` still runs though its guest process is gone (a QEMU), before
   * the agent removes the directory; true when something was ended.
   */
  endLeft(dir: string, config: GuestConfig): Promise<boolean>;
  /** On a migration's destination, before anything starts: refuses a guest this host cannot run (in `dir`, where it would live). */
  admit(config: GuestConfig, dir?: string): Promise<void>;
  /** The compiled guest process entry: `node ENTRY GUESTDIR [--incoming]`. */
  entry(): string;
  /** What an operator reads about a guest of this driver, after its memory: `workload kv:get=...`, `1 CPU, TCG`. */
  describe(config: GuestConfig): string;
  /** Whether this host can run guests of this driver. */
  availability(): Promise<DriverAvailability>;
}
