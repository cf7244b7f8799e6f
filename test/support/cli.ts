/**
 * The ferry CLI as a child process, run as a user runs it: `node bin/ferry ARGS`, which loads
 * dist/cli (the root hook in fresh-build.ts has checked that dist is built from these sources).
 */
import { spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { waitUntil } from './wait.js';

export const BIN = fileURLToPath(new URL('../../bin/ferry', import.meta.url));

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to its end, blocking this process; killed after `timeoutMs`. `env` adds to this process's environment. */
export function ferry(args: string[], env: NodeJS.ProcessEnv = {}, { timeoutMs = 60_000 } = {}): CliResult {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs the CLI and throws with its stderr unless it exits 0. */
export function ferryOk(args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  const r = ferry(args, env);
  if (r.status !== 0) throw new Error(`ferry ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r;
}

/** A running CLI whose output the test reads while it runs. */
export interface FerryChild {
  readonly process: ChildProcessByStdio<null, Readable, Readable>;
  /** Everything it printed on each stream so far. */
  stdout(): string;
  stderr(): string;
  /** Its exit code (null: ended by a signal). */
  readonly exited: Promise<number | null>;
  /** Once its output has ended too: the exit code and all it printed. */
  readonly ended: Promise<CliResult>;
  /** Resolves with the first match once `stream` matches `pattern`; fails at once if the output ends without it. */
  waitForOutput(stream: 'stdout' | 'stderr', pattern: RegExp, ms: number): Promise<RegExpExecArray>;
}

/** Starts the CLI without waiting for it. */
export function startFerry(args: string[], env: NodeJS.ProcessEnv = {}): FerryChild {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const text = { stdout: '', stderr: '' };
  let closed = false;
  child.stdout.setEncoding('utf8').on('data', (d: string) => (text.stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (text.stderr += d));
  const name = `ferry ${args.join(' ')}`;
  const ended = new Promise<CliResult>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (status) => {
      closed = true;
      resolve({ status, ...text });
    });
  });
  // A spawn error rejects `ended` for whoever awaits it; nobody else needs to hear of it.
  ended.catch(() => {});
  return {
    process: child,
    stdout: () => text.stdout,
    stderr: () => text.stderr,
    exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
    ended,
    waitForOutput: (stream, pattern, ms) =>
      waitUntil(
        () => {
          const match = pattern.exec(text[stream]);
          if (!match && closed)
            throw new Error(
              `${name} ended (${child.exitCode ?? child.signalCode}) without printing ${pattern} on ${stream}: ${text.stderr}`,
            );
          return match;
        },
        ms,
        () => `${name} to print ${pattern} on ${stream}: ${text.stderr}`,
      ),
  };
}

/** Runs the CLI to its end without blocking this process (for a test that serves or watches it meanwhile). */
export function ferryAsync(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return startFerry(args, env).ended;
}
