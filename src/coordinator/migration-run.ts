/**
 * One planned migration as the coordinator drives it (docs/operations.md, "A migration, as the
 * coordinator drives it"), a small state machine:
 *
 *   planning ─▶ preparing ─▶ starting ─▶ following ─▶ done
 *                   │            │           │          ▲
 *                   └────────────┴───────────┴─▶ settling
 *
 *   planning   preflight.ts has found the guest and decided the mode; nothing asked of a host yet
 *   preparing  prepare-incoming: the destination takes the spec and the key (it may queue)
 *   starting   start-outgoing: the source takes them (it may queue); the key is wiped once sent
 *   following  the source's engine runs (its 'started' event); its events go to the caller, and a
 *              source in doubt whose destination is in another cluster gets that decision relayed.
 *              A lost connection to the source's agent is not an end: the coordinator reaches the
 *              agent again and follows the migration there by its id (follow.ts)
 *   settling   the source refused, or its agent (reached again) does not know the migration, after
 *              the destination prepared: the destination is told to give up, so that the guest can
 *              only run on the source. Never while the migration may still run at the source.
 *   done       the connections closed, the key wiped
 *
 * Any stage may also end in done at once: planning when cancelled before anything was asked of a
 * host, preparing when the destination refused, any of them when detached.
 *
 * The operator's cancel and detach (MigrateHooks) act by stage, in one place: "The cancel rule" below.
 */
import { FerryError, isErrorCode, toFerryError } from '../errors.js';
import type { AgentClient } from '../control/client.js';
import type { MigrationStreamEvent, ResolveDecision, StartOutgoingResult } from '../control/protocol.js';
import { GENERATION_PROTOCOL } from '../control/protocol.js';
import { diskBytesOf } from '../guest/types.js';
import type { ChannelFailover } from '../channel/types.js';
import { connectHost } from './connect.js';
import { followAgain } from './follow.js';
import { MigrationKey, newMigrationId } from './keys.js';
import type { CoordinatorEvent, MigrateHooks, MigrateRequest, MigrationReport, MigrationSummary } from './migrate.js';
import { PreflightError, type Plan } from './preflight.js';

export const DEFAULT_STREAMS = 2;

/** The state `agent` lists guest `name` in, or null when it does not answer within 5 s. */
function guestStateOn(agent: AgentClient, name: string): Promise<string | null> {
  return agent
    .call('guest.get', { name }, { timeoutMs: 5000 })
    .then((g) => g.state)
    .catch(() => null);
}

type Stage = 'planning' | 'preparing' | 'starting' | 'following' | 'settling' | 'done';

export class MigrationRun {
  private stage: Stage = 'planning';
  private readonly migrationId = newMigrationId();
  private readonly streams: number;
  private readonly emit: (event: CoordinatorEvent) => void;
  private started = 0;
  private secret: MigrationKey | null = null;
  private destinationPrepared = false;
  private nicFallback = false;
  /** Time queued at an agent (first 'queued' event to the source's 'started'), and since when while it waits. */
  private queuedMs: number;
  private queuedSince: number | null = null;
  private readonly failovers: ChannelFailover[] = [];
  private outcome: StartOutgoingResult | null = null;
  private failure: FerryError | null = null;
  private relaying: Promise<void> | null = null;
  private cancelAsked = false;
  private detached = false;
  /** The connection to the source's agent: the plan's, or a later one after it was lost. */
  private source: AgentClient;
  /** Stopped following a migration that may still run: nobody may tell the destination to give up. */
  private mayStillRun = false;

  constructor(
    private readonly req: MigrateRequest,
    private readonly p: Plan,
    private readonly hooks: MigrateHooks,
  ) {
    this.streams = req.streams ?? DEFAULT_STREAMS;
    this.queuedMs = req.queuedMs ?? 0;
    this.emit = hooks.onEvent ?? (() => {});
    this.source = p.source;
  }

  /** Runs the migration to its end. Throws (a PreflightError) only when it was cancelled before anything was asked of a host. */
  async run(): Promise<MigrationSummary> {
    try {
      this.enter('preparing');
      this.hooks.cancel?.addEventListener('abort', this.cancel);
      this.hooks.detach?.addEventListener('abort', this.detach);
      try {
        this.decided();
        const secret = (this.secret = (this.hooks.newKey ?? MigrationKey.generate)());
        await this.prepareDestination(secret);
        await this.startSource(secret);
      } catch (err) {
        this.failure = await this.settle(toFerryError(err));
      }
    } finally {
      this.end();
    }
    return this.summary();
  }

  // ---- the cancel rule ------------------------------------------------------------------------

  /**
   * Moves to stage `next`. A cancel that came while the stage before ran, which that stage had no
   * one to tell, ends the migration here instead:
   * - planning → preparing: cancelled or detached before anything was asked of a host: nothing
   *   changed anywhere, and the caller gets a PreflightError;
   * - preparing → starting: cancelled while the destination prepared (it was told, see cancel):
   *   the source is never asked, and settle() has the destination drop what it prepared.
   */
  private enter(next: Stage): void {
    if (next === 'preparing' && (this.hooks.cancel?.aborted || this.hooks.detach?.aborted)) {
      throw new PreflightError(
        new FerryError('ERR_FERRY_ABORTED', 'cancelled by the operator before anything was asked of a host'),
        this.p.from,
      );
    }
    if (next === 'starting' && this.cancelAsked)
      throw new FerryError('ERR_FERRY_ABORTED', 'cancelled by the operator before the source started');
    this.stage = next;
  }

  /**
   * The operator's cancel (`ferry migrate`'s first Ctrl-C), sent once, to whichever agent holds the
   * migration now; the result says how it ended:
   * - preparing: the destination gives it up (`migration.abort`: it leaves its queue, or drops what
   *   it prepared); the source is never asked (enter);
   * - starting, following, settling: the source's agent (`migration.cancel`): queued there, the
   *   migration leaves the queue; in pre-copy the engine stops and the guest runs on at the source,
   *   un-throttled; from the switch-over on, or in doubt, the agent refuses ('cancel-refused') and
   *   the migration ends by itself, committed or back on the source. While settling, the source
   *   has already ended or is out of reach, and says so.
   */
  private readonly cancel = (): void => {
    if (this.stage === 'done' || this.cancelAsked) return;
    this.cancelAsked = true;
    this.emit({ type: 'cancelling', vm: this.req.guest, side: 'coordinator' });
    const refused = (err: unknown) => {
      const e = toFerryError(err);
      // Once the migration has ended (its result known, the connections closed) there is nothing to say.
      if (this.stage !== 'done' && !this.detached)
        this.emit({ type: 'cancel-refused', vm: this.req.guest, side: 'coordinator', code: e.code, message: e.message });
    };
    if (this.stage === 'preparing') this.p.destination.call('migration.abort', { migrationId: this.migrationId }).catch(refused);
    // starting, following, settling (planning never: the signal is listened to from preparing on)
    else this.source.call('migration.cancel', { guest: this.req.guest, migrationId: this.migrationId }, { timeoutMs: null }).catch(refused);
  };

  /**
   * The second Ctrl-C: stop following at once, whatever the stage. The connections to the agents
   * close and the migration carries on by itself (one still queued at an agent leaves that queue);
   * the result is ERR_FERRY_DETACHED (settle).
   */
  private readonly detach = (): void => {
    if (this.stage === 'done') return;
    this.detached = true;
    this.source.close();
    this.p.destination.close();
  };

  // ---- the stages -----------------------------------------------------------------------------

  /** The spec's channel half, the same for both agents (the key and nonce go as each request's secret trailer). */
  private channel() {
    return {
      migrationId: this.migrationId,
      mode: this.p.mode,
      streams: this.streams,
      ...(this.req.maxBytesPerSecond ? { maxBytesPerSecond: this.req.maxBytesPerSecond } : {}),
    };
  }

  /** The plan, as the caller is told it; the migration's clock starts. */
  private decided(): void {
    const { req, p } = this;
    this.started = performance.now();
    this.emit({
      type: 'decided',
      vm: req.guest,
      from: p.from,
      to: req.to.host.name,
      mode: p.mode,
      streams: this.streams,
      memoryBytes: p.config.memoryBytes,
      diskBytes: diskBytesOf(p.config),
      warning: p.warning,
    });
  }

  /** preparing: prepare-incoming, with the migration's fresh key, at the destination. */
  private async prepareDestination(secret: MigrationKey): Promise<void> {
    const { req, p } = this;
    // Key and nonce go as raw bytes after each request line, never in JSON: strings cannot be wiped.
    // Whom a restarted destination asks before it runs a commit it finds recorded; another cluster's
    // agent could not ask this one (its CA does not admit it).
    const sourceControl = req.to.crossCluster ? undefined : req.cluster.hosts.get(p.from)?.control;
    const incoming = await p.destination.call(
      'migration.prepare-incoming',
      {
        ...this.channel(),
        guest: p.config,
        source: p.from,
        // An older agent refuses a field it does not know; its copy is then generation 0.
        ...(p.destination.agent.protocol >= GENERATION_PROTOCOL ? { generation: p.generation + 1 } : {}),
        ...(sourceControl ? { sourceControl } : {}),
      },
      {
        secret: secret.bytes,
        timeoutMs: null,
        onEvent: (e) => {
          this.noteQueue(e);
          this.emit({ vm: req.guest, side: 'destination', ...e });
        },
      },
    );
    this.destinationPrepared = true;
    this.nicFallback = incoming.nicFallback;
    if (incoming.nicFallback) {
      // Said before the move starts: the guest will lose its passthrough NIC where it lands.
      this.emit({ type: 'nic-fallback', vm: req.guest, side: 'coordinator', host: req.to.host.name, nic: 'virtio' });
    }
  }

  /** starting, then following: start-outgoing at the source, until it answers with the outcome. */
  private async startSource(secret: MigrationKey): Promise<void> {
    const { req, p } = this;
    this.enter('starting');
    const outgoing = this.source.call(
      'migration.start-outgoing',
      {
        ...this.channel(),
        guest: req.guest,
        destination: { host: req.to.host.name, control: req.to.host.control },
        networks: req.to.host.networks.map((n) => n.advertise),
        ...(req.maxDowntimeMs ? { maxDowntimeMs: req.maxDowntimeMs } : {}),
        ...(req.timeoutMs ? { timeoutMs: req.timeoutMs } : {}),
        verify: req.verify ?? false,
        ...(req.removeSourceDisks ? { removeSourceDisks: true } : {}),
      },
      {
        secret: secret.bytes,
        timeoutMs: null,
        onEvent: (e) => this.onSourceEvent(e),
      },
    );
    // Both requests are written (the client sends copies it zeroes itself): the coordinator's part is done.
    secret.wipe();
    try {
      this.outcome = await outgoing;
    } catch (err) {
      if (this.detached || !this.source.lost) throw err;
      this.outcome = await this.followAgain(toFerryError(err));
    }
    if (this.outcome.outcome === 'committed') {
      // It moved; say so if it does not run there now (its process gone since the commit).
      const state = await guestStateOn(p.destination, req.guest);
      if (state !== null && state !== 'running' && state !== 'unknown')
        this.emit({ type: 'not-running', vm: req.guest, side: 'coordinator', host: req.to.label, state });
    } else {
      const e = this.outcome.result?.error;
      // Not committed, the guest is the source's; it runs there unless it did not survive what failed (a QEMU that crashed).
      const state = await guestStateOn(p.source, req.guest);
      this.failure = new FerryError(
        e && isErrorCode(e.code) ? e.code : 'ERR_FERRY_ABORTED',
        `${e?.message ?? 'the migration was aborted'}; guest "${req.guest}" ${state === 'stopped' ? 'is stopped on' : 'runs on'} ${p.from}`,
      );
    }
  }

  /**
   * The connection to the source's agent was lost while it ran the migration: reach it again and
   * follow the migration to its end there. A migration its agent does not know did not run there
   * (settle() then has the destination give it up); one that cannot be followed any more is
   * reported as possibly still running, and the destination is left alone.
   */
  private async followAgain(lost: FerryError): Promise<StartOutgoingResult> {
    const { req, p } = this;
    try {
      const again = await followAgain(
        {
          cluster: req.cluster,
          host: p.from,
          migrationId: this.migrationId,
          guest: req.guest,
          onEvent: (e) => this.onSourceEvent(e),
          onAttempt: (attempt, error) =>
            this.emit({ type: 'reconnecting', vm: req.guest, side: 'coordinator', host: p.from, attempt, error }),
          onClient: (client) => {
            this.source.close();
            this.source = client;
          },
          ...(this.hooks.detach ? { signal: this.hooks.detach } : {}),
        },
        lost,
      );
      if (again.kind === 'ended') return again.result;
      throw new FerryError('ERR_FERRY_ABORTED', `host ${p.from}'s agent, reached again, has no migration ${this.migrationId} running`);
    } catch (err) {
      if (toFerryError(err).code === 'ERR_FERRY_DETACHED') this.mayStillRun = true;
      throw err;
    }
  }

  /** Queue time, from either agent's first 'queued' event to the source's 'started'. */
  private noteQueue(e: MigrationStreamEvent): void {
    if (e.type === 'queued') this.queuedSince ??= performance.now();
    else if (e.type === 'started' && this.queuedSince !== null) {
      this.queuedMs += performance.now() - this.queuedSince;
      this.queuedSince = null;
    }
  }

  private onSourceEvent(e: MigrationStreamEvent): void {
    this.noteQueue(e);
    if (e.type === 'failover') this.failovers.push({ from: e.from, to: e.to, bytesResent: e.bytesResent });
    if (e.type === 'started' && this.stage === 'starting') this.enter('following');
    this.emit({ vm: this.req.guest, side: 'source', ...e });
    // A source in doubt cannot ask a destination of another cluster itself (that CA does not
    // admit it): the coordinator, which holds both clusters' credentials, asks and relays.
    if (e.type === 'resolving' && this.req.to.crossCluster && !this.relaying) {
      // The source then reports 'resolved'; a failed try is tried again at its next 'resolving'.
      this.relaying = relayDecision(this.p.destination, this.source, this.migrationId)
        .then(
          () => {},
          () => {},
        )
        .finally(() => (this.relaying = null));
    }
  }

  /**
   * settling: the source could not be followed to its end (refused, cancelled before it started,
   * or the connection to its agent lost). Returns the failure to report, or null when the
   * destination had committed after all.
   */
  private async settle(why: FerryError): Promise<FerryError | null> {
    if (this.detached) {
      // Not followed to its end: it carries on, and only the agents know how it ends.
      return new FerryError(
        'ERR_FERRY_DETACHED',
        `stopped following migration ${this.migrationId}; it carries on by itself: \`ferry vm list\` shows where guest "${this.req.guest}" ends up`,
      );
    }
    if (!this.destinationPrepared || this.mayStillRun) return why;
    this.enter('settling');
    return abandon(this.p, this.req, this.migrationId, why);
  }

  /** done: whatever happened, the key is wiped and the connections closed. */
  private end(): void {
    this.stage = 'done';
    this.hooks.cancel?.removeEventListener('abort', this.cancel);
    this.hooks.detach?.removeEventListener('abort', this.detach);
    this.secret?.wipe();
    this.source.close();
    this.p.destination.close();
  }

  private summary(): MigrationSummary {
    const { req, p, outcome, failure } = this;
    const r = outcome?.result ?? null;
    if (this.queuedSince !== null) this.queuedMs += performance.now() - this.queuedSince;
    const queuedMs = Math.round(this.queuedMs);
    const report: MigrationReport = {
      type: 'result',
      ok: failure === null,
      vm: req.guest,
      from: p.from,
      to: req.to.label,
      mode: p.mode,
      backend: p.mode === 'encrypted' ? p.sourceCaps.cryptoBackend : 'none',
      // The move's own time: the engine's, or (it never ran) since the plan, less any queueing.
      totalMs: Math.round(r?.totalMs ?? Math.max(0, performance.now() - this.started - (queuedMs - (req.queuedMs ?? 0)))),
      switchoverMs: r?.downtimeMs == null ? null : Math.round(r.downtimeMs * 10) / 10,
      bytesSent: r?.bytesSent ?? 0,
      zeroPagesSkipped: r?.zeroPagesSkipped ?? 0,
      passes: r?.passes.length ?? 0,
      verified: verified(req.verify ?? false, outcome),
      verifyMs: req.verify && r ? verifyMs(r) : null,
      queuedMs,
      nicFallback: this.nicFallback,
      // The source's own list when it ended; the events seen when it did not say (it was lost).
      failovers: r?.failovers ?? this.failovers,
      error: failure ? failure.toJSON() : null,
      ...(r?.disks
        ? {
            disks: {
              bytes: r.disks.bytes,
              memoryBytes: r.hypervisor?.ramBytes ?? 0,
              mirroredBytes: r.disks.mirroredBytes,
              sharedBytes: r.disks.sharedBytes,
              verified: disksVerified(req.verify ?? false, outcome),
              sourceImages: r.disks.sourceImages ?? null,
            },
          }
        : {}),
    };
    return {
      report,
      migrationId: this.migrationId,
      throughput: r?.throughput ?? 0,
      roundTripMs: r?.roundTripMs ?? null,
      warning: p.warning,
      exitCode: failure ? failure.exitCode : 0,
    };
  }
}

/** What --verify held the pause for: the RAM digests of a QEMU guest, the hashing at switch-over of a synthetic one. */
function verifyMs(r: NonNullable<StartOutgoingResult['result']>): number | null {
  const ms = r.hypervisor?.verifyMs ?? r.verification?.switchOverHashMs ?? null;
  return ms === null ? null : Math.round(ms * 10) / 10;
}

function verified(wanted: boolean, outcome: StartOutgoingResult | null): boolean | null {
  const r = outcome?.result;
  if (!wanted || !r || outcome.outcome !== 'committed') return null;
  if (disksVerified(wanted, outcome) === false) return false;
  return r.sourceDigest !== null && r.sourceDigest === r.destinationDigest;
}

/**
 * A QEMU guest's copied disks: the source sent their digests and the destination, which compares
 * them before it commits and does not commit on a mismatch, committed. Nothing copied: null.
 */
function disksVerified(wanted: boolean, outcome: StartOutgoingResult | null): boolean | null {
  const r = outcome?.result;
  if (!wanted || !outcome || !r?.disks || r.disks.mirroredBytes === 0 || outcome.outcome !== 'committed') return null;
  return (r.disks.digests?.source ?? []).some((d) => d !== null);
}

/** Asks the destination for its decision and hands it to the source, which waits in doubt. */
async function relayDecision(destination: AgentClient, source: AgentClient, migrationId: string): Promise<ResolveDecision> {
  const { decision } = await destination.call('migration.resolve', { migrationId });
  await source.call('migration.settle', { migrationId, decision });
  return decision;
}

/**
 * The source could not be followed to the end (refused, or the connection to its agent was lost):
 * the destination's "not committed" is final, so after it the guest can only run on the source.
 */
async function abandon(p: Plan, req: MigrateRequest, migrationId: string, why: FerryError): Promise<FerryError | null> {
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
    return new FerryError(
      why.code,
      `${why.message}; could not tell the destination to give up migration ${migrationId}: if the guest is paused on ${p.from}, its agent resolves it`,
    );
  }
}
