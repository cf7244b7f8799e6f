/**
 * Where `ferry host serve` logs: JSON lines to `--log-file FILE` (appended; nothing else on the
 * terminal), else JSON lines on stderr when stderr is not a terminal (journald, a pipe, a file),
 * else, on a terminal, a short line for people when the agent is ready or stops and for each
 * warning and error: JSON lines spilling over a shell's prompt help nobody there.
 */
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { FerryError } from '../errors.js';
import { createLogger, type LogRecord, type Logger } from '../common/log.js';

export interface AgentLog {
  log: Logger;
  /** Where the lines go, for the operator: the file, "stderr" or "terminal". */
  where: string;
  close(): void;
}

const LINE_MAX = 300;

/** A field's value in a short line: an error as its message, anything else as compact JSON. */
function shortValue(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { message?: unknown }).message === 'string')
    return (v as { message: string }).message;
  return JSON.stringify(v);
}

/** The few lines an agent writes on a terminal; null for the rest (requests, connections). */
export function terminalLine(r: LogRecord): string | null {
  const who = `ferry agent${typeof r.host === 'string' ? ` ${r.host}` : ''}`;
  if (r.msg === 'agent ready') {
    const networks = Array.isArray(r.networks) ? r.networks.join(', ') : '';
    return `${who} ready: control ${String(r.control)}, migration networks ${networks} (pid ${String(r.pid)}; --log-file FILE keeps the full log)`;
  }
  if (r.msg === 'agent stopped') return `${who} stopped`;
  if (r.level !== 'warn' && r.level !== 'error') return null;
  const { time: _t, level, msg, host: _h, ...fields } = r;
  const detail = Object.entries(fields)
    .map(([k, v]) => `${k}=${shortValue(v)}`)
    .join(' ');
  const line = `${who}: ${level === 'error' ? 'error' : 'warning'}: ${msg}${detail ? ` (${detail})` : ''}`;
  return line.length > LINE_MAX ? `${line.slice(0, LINE_MAX - 1)}…` : line;
}

export function openAgentLog(options: { logFile?: string; debug: boolean; stderr?: { isTTY?: boolean } }): AgentLog {
  const level = options.debug ? 'debug' : 'info';
  if (options.logFile !== undefined) {
    const file = path.resolve(options.logFile);
    let fd: number;
    try {
      fd = openSync(file, 'a', 0o600);
    } catch (err) {
      throw new FerryError(
        'ERR_FERRY_INPUT',
        `--log-file ${options.logFile}: cannot open ${file} to append (${(err as NodeJS.ErrnoException).code})`,
      );
    }
    return { log: createLogger({ fd, level }), where: file, close: () => closeSync(fd) };
  }
  if ((options.stderr ?? process.stderr).isTTY) {
    return { log: createLogger({ level, format: terminalLine }), where: 'terminal', close: () => {} };
  }
  return { log: createLogger({ level }), where: 'stderr', close: () => {} };
}
