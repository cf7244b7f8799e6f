/**
 * Structured logs: one JSON object per line on stderr (or any stream), `{time, level, msg, ...}`.
 * Hand-rolled rather than pino because the agent needs only this, written synchronously so the last
 * lines before a crash or SIGTERM are never lost in a worker-thread buffer.
 *
 * Keys must never reach a log. Two guards make that hold even for a careless call: fields whose
 * name says secret (key, nonce, secret, password, privateKey, ...) are replaced by "[redacted]",
 * and binary values (Buffer, Uint8Array, ArrayBuffer) are logged as their length only.
 */
import { writeSync } from 'node:fs';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

const SECRET_FIELD = /^(key|keys|nonce|secret|secrets|password|passphrase|privatekey|private_key|token|spec)$/i;

export type LogFields = Record<string, unknown>;

function sanitize(value: unknown, depth: number): unknown {
  if (value instanceof Uint8Array) return `[${value.byteLength} bytes]`;
  if (value instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && value instanceof SharedArrayBuffer)) {
    return `[${value.byteLength} bytes]`;
  }
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return { name: value.name, message: value.message, ...(typeof code === 'string' ? { code } : {}) };
  }
  if (value === null || typeof value !== 'object') return typeof value === 'bigint' ? value.toString() : value;
  if (depth > 4) return '[nested]';
  if (Array.isArray(value)) return value.slice(0, 50).map((v) => sanitize(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_FIELD.test(k) ? '[redacted]' : sanitize(v, depth + 1);
  return out;
}

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  /** A file descriptor written synchronously (default 2, stderr). */
  fd?: number;
  level?: LogLevel;
  base?: LogFields;
  /**
   * Renders a record (already redacted) as the line to write, or null to write nothing: the agent on
   * a terminal writes a few short lines for people instead of JSON. Default: the JSON line.
   */
  format?: (record: LogRecord) => string | null;
}

/** One log line's content, secrets already redacted. */
export interface LogRecord extends LogFields {
  time: string;
  level: LogLevel;
  msg: string;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const fd = options.fd ?? 2;
  const min = LEVELS[options.level ?? 'info'];
  const make = (base: LogFields): Logger => {
    const write = (level: LogLevel, msg: string, fields?: LogFields): void => {
      if (LEVELS[level] < min) return;
      const record: LogRecord = { time: new Date().toISOString(), level, msg, ...(sanitize({ ...base, ...fields }, 0) as LogFields) };
      const line = options.format ? options.format(record) : JSON.stringify(record);
      if (line === null) return;
      try {
        writeSync(fd, `${line}\n`);
      } catch {
        // A closed stderr must not take the agent down.
      }
    };
    return {
      debug: (msg, fields) => write('debug', msg, fields),
      info: (msg, fields) => write('info', msg, fields),
      warn: (msg, fields) => write('warn', msg, fields),
      error: (msg, fields) => write('error', msg, fields),
      child: (fields) => make({ ...base, ...fields }),
    };
  };
  return make(options.base ?? {});
}
