/**
 * The source's side of the resolve query (docs/operations.md, "The resolve query and the commit
 * record"): `migration.resolve` at the destination's agent, with this host's own certificate.
 * Its answer is the destination's decision, recorded there before it is given: "not committed"
 * when nothing was decided yet, which also forbids that agent a later commit.
 */
import { FerryError, toFerryError } from '../errors.js';
import { AgentClient } from '../control/client.js';
import type { MigrationStreamEvent, ResolveDecision } from '../control/protocol.js';
import { FERRY_VERSION } from '../common/version.js';
import type { MigrationHost } from './migration-records.js';

/** Waits between resolve attempts while the destination cannot be asked: 1 s, doubling, at most 10 s. */
const RESOLVE_BACKOFF_MS = [1000, 2000, 4000, 8000, 10_000];

type Destination = { host: string; control: string };

export class ResolveQueries {
  /** Source migrations in doubt, waiting for the destination's decision: where a relayed one goes. */
  private readonly unsettled = new Map<string, (decision: ResolveDecision) => void>();
  /** Set by stop(): a migration in doubt stays in doubt for the next agent. */
  private stopped = false;

  constructor(private readonly host: MigrationHost) {}

  /** One `migration.resolve` at the destination's agent. */
  async ask(destination: Destination, migrationId: string): Promise<ResolveDecision> {
    const client = await AgentClient.connect({
      address: destination.control,
      host: destination.host,
      credentials: await this.host.state.credentials(),
      client: `ferry-agent ${FERRY_VERSION} (${this.host.state.config.name})`,
    });
    try {
      return (await client.call('migration.resolve', { migrationId })).decision;
    } finally {
      client.close();
    }
  }

  /**
   * Asks the destination's agent for its decision until it answers, or until the coordinator
   * relays that agent's answer (`relay`): the way for a destination in another cluster.
   */
  async untilAnswered(destination: Destination, migrationId: string, emit: (e: MigrationStreamEvent) => void): Promise<ResolveDecision> {
    let relayed: ResolveDecision | null = null;
    let wake = (): void => {};
    this.unsettled.set(migrationId, (decision) => {
      relayed = decision;
      wake();
    });
    try {
      for (let attempt = 1; ; attempt++) {
        let error: string | null = null;
        try {
          return await this.ask(destination, migrationId);
        } catch (err) {
          error = toFerryError(err).message;
        }
        if (relayed) return relayed;
        if (this.stopped)
          throw new FerryError('ERR_FERRY_ABORTED', 'the agent is stopping; the migration stays in doubt until it restarts');
        emit({ type: 'resolving', attempt, error });
        this.host.log.warn('cannot ask the destination yet', { migrationId, attempt, error });
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, RESOLVE_BACKOFF_MS[Math.min(attempt - 1, RESOLVE_BACKOFF_MS.length - 1)]!);
          wake = () => (clearTimeout(timer), resolve());
        });
        if (relayed) {
          this.host.log.info("the coordinator relayed the destination's decision", { migrationId, decision: relayed });
          return relayed;
        }
      }
    } finally {
      this.unsettled.delete(migrationId);
    }
  }

  /** True while migration `migrationId` is asking, in doubt, and a relayed decision would reach it. */
  waiting(migrationId: string): boolean {
    return this.unsettled.has(migrationId);
  }

  /** The destination's decision, relayed by the coordinator, for a source migration in doubt here. */
  relay(migrationId: string, decision: ResolveDecision): ResolveDecision {
    const deliver = this.unsettled.get(migrationId);
    if (!deliver) throw new FerryError('ERR_FERRY_REFUSED', `migration "${migrationId}" is not waiting in doubt for a decision here`);
    deliver(decision);
    return decision;
  }

  /**
   * After the source aborted on its own (before switch-over, the guest running here), the
   * destination's copy can never commit: ask it to decide now, so it frees the memory at once
   * instead of waiting for its channel to time out. Best effort: if the control network is down
   * too, the destination's own timeout gets there. "committed" here would mean two running
   * copies, which the protocol rules out; it is logged as an error should it ever happen.
   */
  tellAborted(destination: Destination, migrationId: string, guest: string): void {
    const log = this.host.log;
    this.ask(destination, migrationId).then(
      (decision) => {
        if (decision === 'committed')
          log.error('the destination recorded a commit for a migration this source aborted', { migrationId, guest });
        else log.info('the destination gave up its copy', { migrationId, guest });
      },
      (err) =>
        log.warn('could not tell the destination to give up its copy; its own timeout will', {
          migrationId,
          guest,
          error: toFerryError(err).message,
        }),
    );
  }

  stop(): void {
    this.stopped = true;
  }
}
