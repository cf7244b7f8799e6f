/**
 * The guest control protocol, spoken over GUESTDIR/control.sock between an agent and its guest
 * process: JSON lines, each request `{id, method, params, secretBytes?}`, each reply
 * `{id, ok: true, result}` or `{id, ok: false, error: {code, message}}`, and for long calls
 * (migrations) any number of `{id, event}` lines before the reply.
 *
 * Secrets (a migration's key and nonce) never travel inside JSON, where they would become
 * immutable strings nobody can wipe: a request with `secretBytes: n` is followed right after its
 * newline by n raw bytes (the secret trailers of src/json-lines.ts, shared with the agent's control
 * API). Limits: a line of at most MAX_LINE_BYTES, a secret of at most MAX_SECRET_BYTES.
 */
import { FerryError, isErrorCode, type ErrorCode } from '../errors.js';
import type { LineLimits } from '../json-lines.js';

export const PROTOCOL_VERSION = 1;
export const MAX_LINE_BYTES = 64 * 1024;
export const MAX_SECRET_BYTES = 64;

export interface Request {
  id: number;
  method: string;
  params?: Record<string, unknown>;
  secretBytes?: number;
}

export type Reply =
  | { id: number; ok: true; result: unknown }
  | { id: number | null; ok: false; error: { code: ErrorCode; message: string } }
  | { id: number; event: unknown };

/** The guest protocol's framing (src/json-lines.ts): lines up to MAX_LINE_BYTES, trailers up to MAX_SECRET_BYTES. */
export const GUEST_LINES: LineLimits = { maxLineBytes: MAX_LINE_BYTES, maxSecretBytes: MAX_SECRET_BYTES };

/** A FerryError from an error reply, keeping its code when it is one of ours. */
export function errorFromReply(error: unknown): FerryError {
  const e = error as { code?: unknown; message?: unknown } | null;
  const code = e && isErrorCode(e.code) ? e.code : 'ERR_FERRY_INTERNAL';
  return new FerryError(code, e && typeof e.message === 'string' ? e.message : 'guest process error');
}
