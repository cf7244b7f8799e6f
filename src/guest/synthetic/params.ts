/**
 * Checks the parameters of migration requests arriving on the control socket: they are input, and
 * a bad one must be a coded error that changes nothing.
 */
import { FerryError } from '../../errors.js';
import { MAX_THREADS } from '../../crypto/backend.js';
import type { ChannelParams, OutgoingSpec } from '../../migration/types.js';
import { onlyKnown } from '../config.js';

export const KEY_BYTES = 32;
export const NONCE_BYTES = 8;
export const SECRET_BYTES = KEY_BYTES + NONCE_BYTES;
const MIGRATION_ID = /^[A-Za-z0-9._-]{1,64}$/;

function bad(message: string): FerryError {
  return new FerryError('ERR_FERRY_INPUT', message);
}

function optionalInt(p: Record<string, unknown>, name: string, min: number, max: number): number | undefined {
  const v = p[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw bad(`${name} must be an integer from ${min} to ${max}`);
  return v;
}

function optionalBool(p: Record<string, unknown>, name: string): boolean | undefined {
  const v = p[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw bad(`${name} must be true or false`);
  return v;
}

/** The fields each request of the control socket may carry; a method not named here takes none. */
const CHANNEL_FIELDS = ['migrationId', 'mode', 'streams', 'maxBytesPerSecond', 'cryptoThreads'] as const;
export const REQUEST_FIELDS: Readonly<Record<string, readonly string[]>> = {
  throttle: ['percent'],
  'cancel-migration': ['migrationId'],
  'prepare-incoming': CHANNEL_FIELDS,
  'migrate-out': [...CHANNEL_FIELDS, 'networks', 'maxDowntimeMs', 'timeoutMs', 'autoConverge', 'verify', 'commitTimeoutMs'],
};

/**
 * Refuses a request with a field its method does not take, before its handler runs: a misspelt or
 * newer option must not be dropped in silence (an agent newer than this guest process learns here
 * that the process is older).
 */
export function checkRequestFields(method: string, params: Record<string, unknown>): void {
  onlyKnown(params, REQUEST_FIELDS[method] ?? [], method);
}

/** The channel parameters of a request, with the key and nonce taken from its secret trailer. */
export function channelParams(p: Record<string, unknown>, secret: Buffer | null): ChannelParams {
  if (typeof p.migrationId !== 'string' || !MIGRATION_ID.test(p.migrationId)) throw bad('migrationId must be 1 to 64 characters of [A-Za-z0-9._-]');
  if (p.mode !== 'encrypted' && p.mode !== 'plain') throw bad('mode must be encrypted or plain');
  if (!secret || secret.length !== SECRET_BYTES) throw bad(`the request must carry the ${KEY_BYTES}-byte key and ${NONCE_BYTES}-byte nonce as its secret`);
  return {
    migrationId: p.migrationId,
    // Copies: the request's own buffer is wiped when the handler returns.
    key: Buffer.from(secret.subarray(0, KEY_BYTES)),
    nonce: Buffer.from(secret.subarray(KEY_BYTES)),
    mode: p.mode,
    streams: optionalInt(p, 'streams', 1, 16) ?? 1,
    maxBytesPerSecond: optionalInt(p, 'maxBytesPerSecond', 1, Number.MAX_SAFE_INTEGER),
    cryptoThreads: optionalInt(p, 'cryptoThreads', 1, MAX_THREADS),
  };
}

export function outgoingSpec(p: Record<string, unknown>, secret: Buffer | null): OutgoingSpec {
  const networks = p.networks;
  if (!Array.isArray(networks) || networks.length === 0 || networks.length > 16 || !networks.every((n) => typeof n === 'string' && n.length <= 300)) {
    throw bad('networks must list 1 to 16 host:port addresses');
  }
  const base = channelParams(p, secret);
  return {
    ...base,
    networks: networks as string[],
    maxDowntimeMs: optionalInt(p, 'maxDowntimeMs', 1, 3_600_000),
    timeoutMs: optionalInt(p, 'timeoutMs', 1, 7 * 24 * 3_600_000),
    autoConverge: optionalBool(p, 'autoConverge'),
    verify: optionalBool(p, 'verify'),
    commitTimeoutMs: optionalInt(p, 'commitTimeoutMs', 1, 24 * 3_600_000),
  };
}
