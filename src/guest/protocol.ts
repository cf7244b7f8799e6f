/**
 * The guest control protocol, spoken over GUESTDIR/control.sock between an agent and its guest
 * process: JSON lines, each request `{id, method, params, secretBytes?}`, each reply
 * `{id, ok: true, result}` or `{id, ok: false, error: {code, message}}`, and for long calls
 * (migrations) any number of `{id, event}` lines before the reply.
 *
 * Secrets (a migration's key and nonce) never travel inside JSON, where they would become
 * immutable strings nobody can wipe: a request with `secretBytes: n` is followed right after its
 * newline by n raw bytes, which the reader copies into a Buffer of their own and zeroes in its
 * input. Limits: a line of at most MAX_LINE_BYTES, a secret of at most MAX_SECRET_BYTES.
 */
import { FerryError, isErrorCode, type ErrorCode } from '../errors.js';

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

export interface Received {
  message: Record<string, unknown>;
  /** The raw bytes after the line, when it announced `secretBytes`; the receiver must wipe them. */
  secret: Buffer | null;
}

/** Incremental line reader that copes with any chunking and carries secret trailers. */
export class LineReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private waitingSecret: { message: Record<string, unknown>; bytes: number } | null = null;

  /** Feeds bytes; returns the complete messages they finish. Throws ERR_FERRY_INPUT on bad input. */
  feed(chunk: Buffer): Received[] {
    this.chunks.push(chunk);
    this.length += chunk.length;
    const out: Received[] = [];
    for (;;) {
      let buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.length);
      if (this.chunks.length > 1) {
        for (const c of this.chunks) c.fill(0);
        this.chunks = [buf];
      }
      if (this.waitingSecret) {
        if (buf.length < this.waitingSecret.bytes) return out;
        const secret = Buffer.alloc(this.waitingSecret.bytes);
        buf.copy(secret, 0, 0, secret.length);
        buf.fill(0, 0, secret.length);
        out.push({ message: this.waitingSecret.message, secret });
        this.waitingSecret = null;
        buf = buf.subarray(secret.length);
        this.reset(buf);
        continue;
      }
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > MAX_LINE_BYTES) throw new FerryError('ERR_FERRY_INPUT', `control line over ${MAX_LINE_BYTES} bytes`);
        return out;
      }
      if (nl > MAX_LINE_BYTES) throw new FerryError('ERR_FERRY_INPUT', `control line over ${MAX_LINE_BYTES} bytes`);
      const message = parseLine(buf.subarray(0, nl));
      this.reset(buf.subarray(nl + 1));
      const secretBytes = message.secretBytes;
      if (secretBytes !== undefined) {
        if (typeof secretBytes !== 'number' || !Number.isInteger(secretBytes) || secretBytes < 1 || secretBytes > MAX_SECRET_BYTES) {
          throw new FerryError('ERR_FERRY_INPUT', `secretBytes must be an integer from 1 to ${MAX_SECRET_BYTES}`);
        }
        this.waitingSecret = { message, bytes: secretBytes };
        continue;
      }
      out.push({ message, secret: null });
    }
  }

  private reset(rest: Buffer): void {
    this.chunks = rest.length > 0 ? [rest] : [];
    this.length = rest.length;
  }

  /** Wipes whatever is buffered (a connection that closed mid-secret). */
  wipe(): void {
    for (const c of this.chunks) c.fill(0);
    this.chunks = [];
    this.length = 0;
  }
}

function parseLine(line: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(line.toString('utf8'));
  } catch {
    throw new FerryError('ERR_FERRY_INPUT', 'control line is not valid JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new FerryError('ERR_FERRY_INPUT', 'control line is not a JSON object');
  return value as Record<string, unknown>;
}

/** One line of JSON, newline-terminated. */
export function encodeLine(value: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(value)}\n`);
}

/** A FerryError from an error reply, keeping its code when it is one of ours. */
export function errorFromReply(error: unknown): FerryError {
  const e = error as { code?: unknown; message?: unknown } | null;
  const code = e && isErrorCode(e.code) ? e.code : 'ERR_FERRY_INTERNAL';
  return new FerryError(code, e && typeof e.message === 'string' ? e.message : 'guest process error');
}
