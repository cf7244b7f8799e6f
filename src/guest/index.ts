/**
 * The guest room: what a guest is (types, config), the driver contract and its drivers, the guest
 * control protocol, and the guest processes the agent runs (process.ts).
 */
export { GuestClient, type GuestStatusReport, type MigrationInfo, type MigrationPhase } from './client.js';
export { checkCreateRequest, checkGuestConfig, configOf, ENCRYPTED_MIGRATION_MODES } from './config.js';
export type { DriverAvailability, GuestDriver } from './driver.js';
export { describeGuest, DRIVERS, driverOf, isDriverName } from './drivers.js';
/** The synthetic driver's workloads, as `--workload` spells them. */
export { formatWorkload, parseWorkload } from './synthetic/config.js';
export { CONFIG_FILE, CONTROL_SOCKET, LOG_FILE, PID_FILE } from './files.js';
export type { ConsoleChunk } from './console.js';
/** The qemu driver's files in a guest directory, and ferry's test guest as operators meet it (its -append text, its serial lines). */
export { CONSOLE_LOG, QEMU_PID_FILE } from './qemu/argv.js';
export { parseTestGuestLog, testGuestAppend, type TestGuestLine } from './qemu/test-guest.js';
export { attachGuest, IncomingGuest, startGuest, startIncomingGuest } from './process.js';
export type * from './types.js';
export { diskBytesOf } from './types.js';
export type { IncomingSpec, MigrationEvent, MigrationResult, OutgoingSpec } from '../migration/types.js';
