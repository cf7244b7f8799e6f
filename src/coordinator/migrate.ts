/**
 * One migration, as the coordinator runs it: find the guest, read both agents' capabilities over
 * mTLS, decide the mode, draw a fresh key, hand the spec to the destination (prepare-incoming)
 * and then the source (start-outgoing), follow the events, and wipe the key. A library, so
 * `ferry migrate`, `ferry evacuate` and `ferry demo` share it, and tests can run it in-process.
 *
 * Errors before anything was asked of an agent (no such guest, a host that cannot take it, a
 * required guest and a host that cannot encrypt) are thrown. Once a spec went out, the outcome is
 * a MigrationReport with ok:false and the error: the guest still runs on the source.
 */
import { FerryError, isErrorCode, toFerryError } from '../errors.js';
import type { AgentClient } from '../control/client.js';
import { KEY_TRAILER_PROTOCOL, type Capabilities, type MigrationStreamEvent, type ResolveDecision, type StartOutgoingResult } from '../control/protocol.js';
import type { GuestConfig, EncryptedMigration } from '../guest/types.js';
import { configOf } from '../guest/config.js';
import { diskBytesOf } from '../guest/types.js';
import type { ChannelMode } from '../channel/types.js';
import { formatBytes } from '../common/units.js';
import type { Cluster } from './cluster.js';
import { connectHost } from './connect.js';
import { locateGuest } from './locate.js';
import { decideMode } from './mode.js';
import { MigrationKey, newMigrationId } from './keys.js';
import type { Target } from './target.js';

export const DEFAULT_STREAMS = 2;

export interface MigrateRequest {
  guest: string;
  /** The cluster the guest is in now. */
  cluster: Cluster;
  to: Target;
  /** The source host when the caller knows it (evacuate); otherwise every host is asked. */
  from?: string;
  /** Overrides the guest's encrypted-migration setting. */
  mode?: EncryptedMigration;
  streams?: number;
  maxDowntimeMs?: number;
  maxBytesPerSecond?: number;
  timeoutMs?: number;
  verify?: boolean;
}

/** What the coordinator tells its caller while a migration runs. */
export type CoordinatorEvent =
  | { type: 'decided'; vm: string; from: string; to: string; mode: ChannelMode; streams: number; memoryBytes: number; diskBytes: number; warning: string | null }
  /** The operator's cancel went to the agents; the result says how it ended. */
  | { type: 'cancelling'; vm: string; side: 'coordinator' }
  /** The source agent could not cancel now (switch-over under way, in doubt): the migration ends by itself. */
  | { type: 'cancel-refused'; vm: string; side: 'coordinator'; code: string; message: string }
  | ({ vm: string; side: 'source' | 'destination' } & MigrationStreamEvent);

export interface MigrateHooks {
  onEvent?: (event: CoordinatorEvent) => void;
  /**
   * Where the migration's key comes from (default: MigrationKey.generate). Only in-process callers
   * can pass one: the key-leak tests keep a copy to search for. The CLI has no way to set it.
   */
  newKey?: () => MigrationKey;
  /**
   * Aborted: cancel the migration. While the destination prepares, it is told to give up; once
   * the source runs it, the source agent cancels it (`migration.cancel`): in pre-copy the guest
   * stays on the source and the result is ok:false, ERR_FERRY_ABORTED; from the switch-over on it
   * is refused (a 'cancel-refused' event) and the migration ends by itself.
   */
  cancel?: AbortSignal;
  /**
   * Aborted: stop following at once. The connections to the agents close and the migration
   * carries on by itself (a migration still queued at an agent leaves that queue: it never
   * started); the result is ok:false, ERR_FERRY_DETACHED.
   */
  detach?: AbortSignal;
}

/** `ferry migrate --json`'s last line: exactly these fields. */
export interface MigrationReport {
  type: 'result';
  ok: boolean;
  vm: string;
  from: string;
  to: string;
  mode: ChannelMode;
  backend: string;
  totalMs: number;
  switchoverMs: number | null;
  bytesSent: number;
  zeroPagesSkipped: number;
  passes: number;
  verified: boolean | null;
  error: { code: string; message: string } | null;
}

/** The report and what people are shown besides. */
export interface MigrationSummary {
  report: MigrationReport;
  migrationId: string;
  /** Payload bytes a second over the whole migration. */
  throughput: number;
  /** The data link's round trip as the source's engine measured it (which every pause holds); null when it never ran. */
  roundTripMs: number | null;
  nicFallback: boolean;
  warning: string | null;
  /** The exit status of a failed migration (1, or 2 when an agent found the request bad). */
  exitCode: 0 | 1 | 2;
}

interface Prepared {
  from: string;
  config: GuestConfig;
  source: AgentClient;
  destination: AgentClient;
  sourceCaps: Capabilities;
  mode: ChannelMode;
  warning: string | null;
}

/** A migration refused before any spec went out; `from` when the guest had been found. */
export class PreflightError extends FerryError {
  constructor(cause: FerryError, readonly from: string | null) {
    super(cause.code, cause.message, { cause });
  }
}

/**
 * The result line of a migration refused before it started: the same fields as a MigrationReport,
 * null where nothing is known (so a script reads one shape, whatever happened).
 */
export function preflightReport(req: Pick<MigrateRequest, 'guest' | 'to'>, err: unknown): Omit<MigrationReport, 'mode' | 'backend' | 'from'> & { mode: null; backend: null; from: string | null } {
  const e = toFerryError(err);
  return {
    type: 'result', ok: false, vm: req.guest, from: e instanceof PreflightError ? e.from : null, to: req.to.label, mode: null, backend: null,
    totalMs: 0, switchoverMs: null, bytesSent: 0, zeroPagesSkipped: 0, passes: 0, verified: null, error: e.toJSON(),
  };
}

async function prepare(req: MigrateRequest, from: string): Promise<Prepared> {
  const to = req.to.host.name;
  if (from === to && !req.to.crossCluster) throw new FerryError('ERR_FERRY_INPUT', `guest "${req.guest}" already runs on host ${to}`);
  const source = await connectHost(req.cluster, from);
  let destination: AgentClient | null = null;
  try {
    destination = await connectHost(req.to.cluster, to);
    for (const [client, name] of [[source, from], [destination, to]] as const) keyable(client, name);
    const info = await source.call('guest.get', { name: req.guest });
    const { state } = info;
    const config = configOf(info);
    if (state !== 'running' && state !== 'paused') {
      throw new FerryError('ERR_FERRY_REFUSED', `guest "${req.guest}" is ${state} on host ${from}: only a running or paused guest can move`);
    }
    const [sourceCaps, destinationCaps] = await Promise.all([source.call('capabilities', {}), destination.call('capabilities', {})]);
    const decision = decideMode(req.mode ?? config.encryptedMigration, { name: from, encrypts: sourceCaps.encrypts }, { name: to, encrypts: destinationCaps.encrypts });
    if (destinationCaps.freeMemoryBytes < config.memoryBytes) {
      throw new FerryError('ERR_FERRY_REFUSED', `host ${to} has ${formatBytes(destinationCaps.freeMemoryBytes)} free; guest "${req.guest}" needs ${formatBytes(config.memoryBytes)}`);
    }
    return { from, config, source, destination, sourceCaps, mode: decision.mode, warning: decision.warning ?? null };
  } catch (err) {
    source.close();
    destination?.close();
    throw err;
  }
}

/**
 * Both agents take the migration key, which only control protocol KEY_TRAILER_PROTOCOL and later
 * carry safely (as raw bytes after the request line, never in JSON). An older agent is refused here,
 * before a key exists, with what to do about it; AgentClient.call would refuse to send it anyway.
 */
function keyable(client: AgentClient, host: string): void {
  const { protocol, agentVersion } = client.agent;
  if (protocol >= KEY_TRAILER_PROTOCOL) return;
  throw new FerryError(
    'ERR_FERRY_REFUSED',
    `host ${host} runs ferry ${agentVersion} (control protocol ${protocol}), which cannot take a migration key as raw bytes (protocol ${KEY_TRAILER_PROTOCOL} or later): upgrade its agent first; nothing was moved`,
  );
}

function verified(wanted: boolean, outcome: StartOutgoingResult | null): boolean | null {
  const r = outcome?.result;
  if (!wanted || !r || outcome.outcome !== 'committed') return null;
  return r.sourceDigest !== null && r.sourceDigest === r.destinationDigest;
}

/** Runs one migration to its end. Throws (a PreflightError) only for problems found before any spec went out. */
export async function migrateGuest(req: MigrateRequest, hooks: MigrateHooks = {}): Promise<MigrationSummary> {
  const emit = hooks.onEvent ?? (() => {});
  let from: string | null = req.from ?? null;
  let p: Prepared;
  try {
    from ??= (await locateGuest(req.cluster, req.guest)).host;
    p = await prepare(req, from);
  } catch (err) {
    throw new PreflightError(toFerryError(err), from);
  }
  if (hooks.cancel?.aborted || hooks.detach?.aborted) {
    p.source.close();
    p.destination.close();
    throw new PreflightError(new FerryError('ERR_FERRY_ABORTED', 'cancelled by the operator before anything was asked of a host'), from);
  }
  const to = req.to.host.name;
  const streams = req.streams ?? DEFAULT_STREAMS;
  const migrationId = newMigrationId();
  const started = performance.now();
  emit({ type: 'decided', vm: req.guest, from: p.from, to, mode: p.mode, streams, memoryBytes: p.config.memoryBytes, diskBytes: diskBytesOf(p.config), warning: p.warning });

  const secret = (hooks.newKey ?? MigrationKey.generate)();
  let outcome: StartOutgoingResult | null = null;
  let failure: FerryError | null = null;
  let nicFallback = false;
  let prepared = false;
  let relaying: Promise<void> | null = null;
  // The operator's cancel goes to whichever agent holds the migration now.
  let stage: 'preparing' | 'outgoing' | 'done' = 'preparing';
  let cancelAsked = false;
  const onCancel = () => {
    if (stage === 'done' || cancelAsked) return;
    cancelAsked = true;
    emit({ type: 'cancelling', vm: req.guest, side: 'coordinator' });
    const refused = (err: unknown) => {
      const e = toFerryError(err);
      // Once the migration has ended (its result known, the connections closed) there is nothing to say.
      if (stage !== 'done' && !detached) emit({ type: 'cancel-refused', vm: req.guest, side: 'coordinator', code: e.code, message: e.message });
    };
    // Preparing: the destination gives up (leaving its queue); the source is never asked.
    if (stage === 'preparing') p.destination.call('migration.abort', { migrationId }).catch(refused);
    else p.source.call('migration.cancel', { guest: req.guest, migrationId }, { timeoutMs: null }).catch(refused);
  };
  let detached = false;
  const onDetach = () => {
    if (stage === 'done') return;
    detached = true;
    p.source.close();
    p.destination.close();
  };
  hooks.cancel?.addEventListener('abort', onCancel);
  hooks.detach?.addEventListener('abort', onDetach);
  try {
    // Key and nonce go as raw bytes after each request line, never in JSON: strings cannot be wiped.
    const channel = {
      migrationId,
      mode: p.mode,
      streams,
      ...(req.maxBytesPerSecond ? { maxBytesPerSecond: req.maxBytesPerSecond } : {}),
    };
    const incoming = await p.destination.call('migration.prepare-incoming', { ...channel, guest: p.config, source: p.from }, {
      secret: secret.bytes,
      timeoutMs: null,
      onEvent: (e) => emit({ vm: req.guest, side: 'destination', ...e }),
    });
    prepared = true;
    nicFallback = incoming.nicFallback;
    if (cancelAsked) throw new FerryError('ERR_FERRY_ABORTED', 'cancelled by the operator before the source started');
    stage = 'outgoing';
    const outgoing = p.source.call('migration.start-outgoing', {
      ...channel,
      guest: req.guest,
      destination: { host: to, control: req.to.host.control },
      networks: req.to.host.networks.map((n) => n.advertise),
      ...(req.maxDowntimeMs ? { maxDowntimeMs: req.maxDowntimeMs } : {}),
      ...(req.timeoutMs ? { timeoutMs: req.timeoutMs } : {}),
      verify: req.verify ?? false,
    }, {
      secret: secret.bytes,
      timeoutMs: null,
      onEvent: (e) => {
        emit({ vm: req.guest, side: 'source', ...e });
        // A source in doubt cannot ask a destination of another cluster itself (that CA does not
        // admit it): the coordinator, which holds both clusters' credentials, asks and relays.
        if (e.type === 'resolving' && req.to.crossCluster && !relaying) {
          // The source then reports 'resolved'; a failed try is tried again at its next 'resolving'.
          relaying = relayDecision(p, migrationId).then(() => {}, () => {}).finally(() => (relaying = null));
        }
      },
    });
    // Both requests are written (the client sends copies it zeroes itself): the coordinator's part is done.
    secret.wipe();
    outcome = await outgoing;
    if (outcome.outcome !== 'committed') {
      const e = outcome.result?.error;
      failure = new FerryError(e && isErrorCode(e.code) ? e.code : 'ERR_FERRY_ABORTED', `${e?.message ?? 'the migration was aborted'}; guest "${req.guest}" runs on ${p.from}`);
    }
  } catch (err) {
    failure = toFerryError(err);
    if (detached) {
      // Not followed to its end: it carries on, and only the agents know how it ends.
      failure = new FerryError('ERR_FERRY_DETACHED', `stopped following migration ${migrationId}; it carries on by itself: \`ferry vm list\` shows where guest "${req.guest}" ends up`);
    } else if (prepared) failure = await abandon(p, req, migrationId, failure);
  } finally {
    stage = 'done';
    hooks.cancel?.removeEventListener('abort', onCancel);
    hooks.detach?.removeEventListener('abort', onDetach);
    secret.wipe();
    p.source.close();
    p.destination.close();
  }
  const r = outcome?.result ?? null;
  const report: MigrationReport = {
    type: 'result',
    ok: failure === null,
    vm: req.guest,
    from: p.from,
    to: req.to.label,
    mode: p.mode,
    backend: p.mode === 'encrypted' ? p.sourceCaps.cryptoBackend : 'none',
    totalMs: Math.round(r?.totalMs ?? performance.now() - started),
    switchoverMs: r?.downtimeMs == null ? null : Math.round(r.downtimeMs * 10) / 10,
    bytesSent: r?.bytesSent ?? 0,
    zeroPagesSkipped: r?.zeroPagesSkipped ?? 0,
    passes: r?.passes.length ?? 0,
    verified: verified(req.verify ?? false, outcome),
    error: failure ? failure.toJSON() : null,
  };
  return { report, migrationId, throughput: r?.throughput ?? 0, roundTripMs: r?.roundTripMs ?? null, nicFallback, warning: p.warning, exitCode: failure ? failure.exitCode : 0 };
}


/** Asks the destination for its decision and hands it to the source, which waits in doubt. */
async function relayDecision(p: Prepared, migrationId: string): Promise<ResolveDecision> {
  const { decision } = await p.destination.call('migration.resolve', { migrationId });
  await p.source.call('migration.settle', { migrationId, decision });
  return decision;
}

/**
 * The source could not be followed to the end (refused, or the connection to its agent was lost):
 * the destination's "not committed" is final, so after it the guest can only run on the source.
 */
async function abandon(p: Prepared, req: MigrateRequest, migrationId: string, why: FerryError): Promise<FerryError | null> {
  const ask = async (client: AgentClient) => (await client.call('migration.abort', { migrationId })).decision;
  try {
    let decision;
    try {
      decision = await ask(p.destination);
    } catch {
      // The connection may be what failed: once more on a fresh one.
      const fresh = await connectHost(req.to.cluster, req.to.host.name);
      try {
        decision = await ask(fresh);
      } finally {
        fresh.close();
      }
    }
    if (decision === 'committed') return null; // it had already landed: the guest runs on the destination
    return new FerryError(why.code, `${why.message}; the destination recorded "not committed": guest "${req.guest}" runs on ${p.from}`);
  } catch {
    return new FerryError(why.code, `${why.message}; could not tell the destination to give up migration ${migrationId}: if the guest is paused on ${p.from}, its agent resolves it`);
  }
}
