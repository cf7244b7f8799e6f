/**
 * The source's side of the resolve query (docs/operations.md, "The resolve query and the commit
 * record"): `migration.resolve` at the destination's agent, with this host's own certificate.
 * Its answer is the destination's decision, recorded there before it is given: "not committed"
 * when nothing was decided yet, which also forbids that agent a later commit.
 */
import { FerryError, toFerryError } from '../errors.js';
import type { MigrationStreamEvent, ResolveDecision } from '../control/protocol.js';
import { askAgent } from './agent-call.js';
import type { MigrationHost } from './migration-records.js';

/** Waits between resolve attempts while the destination cannot be asked: 1 s, doubling, at most 10 s. */
const RESOLVE_BACKOFF_MS = [1000, 2000, 4000, 8000, 10_000];

type Destination = { host: string; control: string };

/** A source migration in doubt: where a relayed decision goes, and the operator's fence while it is being recorded. */
interface Unsettled {
  deliver(decision: ResolveDecision): void;
  fencing: Promise<void> | null;
}

export class ResolveQueries {
  /** Source migrations in doubt, waiting for the destination's decision. */
  private readonly unsettled = new Map<string, Unsettled>();
  /** Set by stop(): a migration in doubt stays in doubt for the next agent. */
  private stopped = false;

  constructor(private readonly host: MigrationHost) {}

  /** One `migration.resolve` at the destination's agent. */
  async ask(destination: Destination, migrationId: string): Promise<ResolveDecision> {
    return askAgent(this.host, destination, async (client) => (await client.call('migration.resolve', { migrationId })).decision);
  }

  /**
   * Asks the destination's agent for its decision until it answers, or until the coordinator
   * relays that agent's answer (`relay`): the way for a destination in another cluster.
   */
  async untilAnswered(destination: Destination, migrationId: string, emit: (e: MigrationStreamEvent) => void): Promise<ResolveDecision> {
    let relayed: ResolveDecision | null = null;
    let wake = (): void => {};
    const entry: Unsettled = {
      deliver: (decision) => {
        relayed ??= decision; // the first decision stands
        wake();
      },
      fencing: null,
    };
    this.unsettled.set(migrationId, entry);
    try {
      for (let attempt = 1; ; attempt++) {
        let error: string | null = null;
        try {
          const answer = await this.ask(destination, migrationId);
          // An operator's fence being recorded meanwhile stands (it was asked of a destination said to be gone).
          if (entry.fencing) await entry.fencing.catch(() => {});
          return relayed ?? answer;
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
    const entry = this.unsettled.get(migrationId);
    if (!entry) throw new FerryError('ERR_FERRY_REFUSED', `migration "${migrationId}" is not waiting in doubt for a decision here`);
    if (entry.fencing) throw new FerryError('ERR_FERRY_REFUSED', `migration "${migrationId}" is being settled by the operator's fence`);
    entry.deliver(decision);
    return decision;
  }

  /**
   * The operator's fence of a migration waiting in doubt here: `record` writes it durably, then
   * "not committed" goes to the waiting migration (which resumes the guest here). Nothing changes
   * when `record` fails.
   */
  async fence(migrationId: string, record: () => Promise<void>): Promise<void> {
    const entry = this.unsettled.get(migrationId);
    if (!entry) throw new FerryError('ERR_FERRY_REFUSED', `migration "${migrationId}" is not waiting in doubt for a decision here`);
    if (entry.fencing) throw new FerryError('ERR_FERRY_REFUSED', `migration "${migrationId}" is already being fenced`);
    const fencing = record().then(() => entry.deliver('not-committed'));
    entry.fencing = fencing;
    try {
      await fencing;
    } finally {
      entry.fencing = null;
    }
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
