/**
 * Following a migration again at its source after the control connection that started it was
 * lost (the source's agent restarted, or the control network blinked). The guest processes carry
 * a migration without their agents, and a restarted agent adopts what its guest processes still
 * run, so losing the connection says nothing of how the migration ends: the coordinator
 * reconnects, with a bounded backoff, and asks the agent to follow the migration by its id
 * (`migration.follow`). Nobody tells the destination to give up only because the source was lost.
 */
import { FerryError, toFerryError } from '../errors.js';
import type { AgentClient } from '../control/client.js';
import type { MigrationStreamEvent, StartOutgoingResult } from '../control/protocol.js';
import { sleep } from '../common/async.js';
import type { Cluster } from './cluster.js';
import { connectHost } from './connect.js';

/** Waits between attempts to reach the source's agent again: a restart takes a second or two. */
const RECONNECT_BACKOFF_MS = [200, 400, 800, 1600, 3200, 5000];
/** How long the coordinator tries to reach the source's agent again before it stops following. */
export const DEFAULT_REFOLLOW_MS = 60_000;

export type Refollowed =
  /** The source's agent followed it to its end: its answer, as start-outgoing would have given it. */
  | { kind: 'ended'; result: StartOutgoingResult }
  /** The source's agent does not know it: it never reached the guest process, or ended there before the agent restarted. */
  | { kind: 'unknown' };

export interface RefollowOptions {
  cluster: Cluster;
  host: string;
  migrationId: string;
  guest: string;
  /** How long to keep trying to reach the agent (default DEFAULT_REFOLLOW_MS). */
  windowMs?: number;
  onEvent: (e: MigrationStreamEvent) => void;
  /** Each attempt, before it connects; `error` is why the last one failed. */
  onAttempt: (attempt: number, error: string) => void;
  /** The connection now used (the caller's cancel goes on it; the caller closes it). */
  onClient: (client: AgentClient) => void;
  /** Aborted: stop trying (detached). */
  signal?: AbortSignal;
}

/**
 * Reaches the source's agent again and follows migration `migrationId` there to its end. Throws
 * the migration's own error when it ended with one, and ERR_FERRY_DETACHED — saying the migration
 * may still run and how to follow or cancel it — when the agent cannot be reached within the window.
 */
export async function followAgain(o: RefollowOptions, lost: FerryError): Promise<Refollowed> {
  const started = performance.now(); // monotonic: a clock step neither shortens nor stretches the window
  const windowMs = o.windowMs ?? DEFAULT_REFOLLOW_MS;
  let error = lost.message;
  for (let attempt = 1; ; attempt++) {
    if (o.signal?.aborted) throw stillRunning(o, error, 'stopped following on request');
    o.onAttempt(attempt, error);
    let client: AgentClient | null = null;
    try {
      client = await connectHost(o.cluster, o.host);
      o.onClient(client);
      const result = await client.call('migration.follow', { migrationId: o.migrationId }, { timeoutMs: null, onEvent: o.onEvent });
      return { kind: 'ended', result };
    } catch (err) {
      const e = toFerryError(err);
      // An answer from the agent (not a lost connection) is the migration's truth.
      if (client && !client.lost) {
        if (e.code === 'ERR_FERRY_NOT_FOUND') return { kind: 'unknown' };
        if (/unknown method/.test(e.message)) throw stillRunning(o, `its agent cannot follow a migration again (${e.message})`);
        throw e;
      }
      error = e.message;
    }
    const wait = RECONNECT_BACKOFF_MS[Math.min(attempt - 1, RECONNECT_BACKOFF_MS.length - 1)]!;
    if (performance.now() - started + wait > windowMs) {
      throw stillRunning(o, `${error}; tried for ${Math.round((performance.now() - started) / 1000)} s`);
    }
    await sleep(wait);
  }
}

function stillRunning(o: RefollowOptions, why: string, prefix = `lost the connection to host ${o.host}`): FerryError {
  return new FerryError(
    'ERR_FERRY_DETACHED',
    `${prefix} (${why}): migration ${o.migrationId} of guest "${o.guest}" may still be running — its guest processes carry it without their agents. ` +
      `\`ferry resolve ${o.guest}\` follows it to its end; \`ferry cancel ${o.guest}\` cancels it before its switch-over`,
  );
}

/**
 * ", migration ID to HOST is still running (…)" for guest `guest`'s migration that has not ended at
 * its source, to name it in a refusal; empty when the agent names none (or is too old to).
 */
export async function runningMigration(source: AgentClient, guest: string): Promise<string> {
  try {
    const m = await source.call('migration.outgoing', { guest });
    return `: migration ${m.migrationId} to ${m.destination.host} is still running (${m.phase}; \`ferry resolve ${guest}\` follows it, \`ferry cancel ${guest}\` cancels it)`;
  } catch {
    return '';
  }
}
