/**
 * Guest configs as they arrive over the control API, from the agent's records and in a guest
 * directory: checked here, so a bad one is a coded ERR_FERRY_INPUT before any process starts.
 * The fields every guest has are checked here; the rest by the guest's driver (drivers.ts).
 */
import { bad, defaulted, obj, oneOf, str, type Check } from '../common/validate.js';
import { GUEST_NAME, GUEST_NAME_RULE } from '../common/names.js';
import { DRIVERS, isDriverName } from './drivers.js';
import type { EncryptedMigration, GuestConfig, GuestCreateRequest, NicKind } from './types.js';

export const ENCRYPTED_MIGRATION_MODES: readonly EncryptedMigration[] = ['disabled', 'opportunistic', 'required'];

/** The fields every driver's config has. */
const COMMON_FIELDS = {
  name: str({ pattern: GUEST_NAME, describe: `a guest name (${GUEST_NAME_RULE})` }),
  driver: str({ max: 40 }),
  nic: defaulted(oneOf<NicKind>(['virtio', 'sriov']), 'virtio'),
  encryptedMigration: defaulted(oneOf(ENCRYPTED_MIGRATION_MODES), 'opportunistic'),
};

const checks = (fields: 'configFields' | 'createFields') =>
  Object.fromEntries(Object.entries(DRIVERS).map(([name, d]) => [name, obj({ ...COMMON_FIELDS, ...d[fields] })])) as Record<
    string,
    Check<unknown>
  >;
const CONFIG_CHECKS = checks('configFields');
const CREATE_CHECKS = checks('createFields');

function byDriver(checks: Record<string, Check<unknown>>, value: unknown, field: string): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) bad(field, 'must be an object');
  const driver = (value as { driver?: unknown }).driver;
  if (!isDriverName(driver)) bad(`${field}.driver`, `must be one of ${Object.keys(DRIVERS).join(', ')}`);
  return checks[driver]!(value, field);
}

/** A complete, checked copy of `value`; throws ERR_FERRY_INPUT naming the first bad field. */
export function checkGuestConfig(value: unknown, field = 'guest config'): GuestConfig {
  return byDriver(CONFIG_CHECKS, value, field) as GuestConfig;
}

/** A checked request to create a guest (its driver's create() makes the config from it). */
export function checkCreateRequest(value: unknown, field = 'guest'): GuestCreateRequest {
  return byDriver(CREATE_CHECKS, value, field) as GuestCreateRequest;
}

/** The config part of something that carries one (a GuestInfo: config plus where and how it runs). */
export function configOf(g: GuestConfig & object): GuestConfig {
  const fields = [...Object.keys(COMMON_FIELDS), ...Object.keys(DRIVERS[g.driver].configFields)];
  return Object.fromEntries(
    fields.filter((k) => k in g).map((k) => [k, (g as unknown as Record<string, unknown>)[k]]),
  ) as unknown as GuestConfig;
}
