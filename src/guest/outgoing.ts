/**
 * A guest process's outgoing migration, for any driver: the checks before it starts, the tracker
 * that outlives the control connection that asked for it, the channel opened with the key wiped
 * at once, the driver's engine run over it, the guest's state after it, and the operator's cancel
 * (before switch-over only: from then on the destination decides, docs/migration.md "Cancelling").
 */
import { FerryError, toFerryError } from '../errors.js';
import type { Channel, ChannelFailover } from '../channel/types.js';
import type { MigrationEvent, MigrationResult, OutgoingSpec } from '../migration/types.js';
import type { GuestCallContext } from './control-server.js';
import { MigrationTracker, type MigrationInfo } from './migration-tracker.js';
import { keyOfTrailer, type CancelReason, type MigrateOutParams } from './protocol.js';
import { openOutgoing } from './transport.js';
import type { GuestState } from './types.js';

export interface OutgoingDriver {
  /** The guest's state now; setState changes it. */
  getState(): GuestState;
  setState(state: GuestState): void;
  log(message: string): void;
  /** Runs the migration over the open channel (the spec's key and nonce are already wiped). */
  engine(channel: Channel, spec: OutgoingSpec, signal: AbortSignal, emit: (event: MigrationEvent) => void): Promise<MigrationResult>;
  /** Said at the end of the start line, e.g. "crypto on every core". */
  detail?: string;
  /** Said after a result, e.g. "; crypto on 2 threads at most". */
  resultDetail?(result: MigrationResult): string;
}

export class OutgoingMigrations {
  /** The current or last migration of this guest process, either way. */
  tracker: MigrationTracker | null = null;
  private cancel: AbortController | null = null;

  /** A source migration running or unresolved: its guest must not stop (it could end up nowhere). */
  get busy(): boolean {
    return this.tracker !== null && this.tracker.role === 'source' && !['committed', 'aborted'].includes(this.tracker.phase);
  }

  async run(params: MigrateOutParams, ctx: GuestCallContext<MigrationEvent>, driver: OutgoingDriver): Promise<MigrationInfo> {
    if (this.busy) throw new FerryError('ERR_FERRY_REFUSED', 'a migration of this guest is already in progress');
    const before = driver.getState();
    if (before !== 'running' && before !== 'paused') throw new FerryError('ERR_FERRY_REFUSED', `cannot migrate a guest that is ${before}`);
    const spec = { ...params, ...keyOfTrailer(ctx.secret) };
    const t = new MigrationTracker('source', spec.migrationId);
    this.tracker = t;
    const cancel = new AbortController();
    this.cancel = cancel;
    driver.setState('migrating');
    driver.log(
      `migration ${spec.migrationId} out to ${spec.networks.join(',')} (${spec.mode}, ${spec.streams} streams${driver.detail ? `, ${driver.detail}` : ''})`,
    );
    const unsubscribe = t.subscribe((e) => ctx.emit(e));
    const failovers: ChannelFailover[] = [];
    const onFailover = (f: ChannelFailover): void => {
      failovers.push(f);
      driver.log(`migration ${spec.migrationId}: network ${f.from} lost, carrying on over ${f.to} (${f.bytesResent} bytes to send again)`);
      t.emit({ type: 'failover', ...f });
    };
    try {
      let channel;
      try {
        // A cancel while the channel connects ends the connecting at once (not its timeouts).
        channel = await openOutgoing(spec, spec.networks, { signal: cancel.signal, onFailover });
      } finally {
        spec.key.fill(0);
        spec.nonce.fill(0);
      }
      // A cancel that came after the channel opened and before the engine listens: it stops at once.
      const result = { ...(await driver.engine(channel, spec, cancel.signal, (e) => t.emit(e))), failovers };
      driver.setState(result.outcome === 'committed' ? 'migrated' : result.outcome === 'in-doubt' ? 'in-doubt' : before);
      const detail = `${result.error ? ` (${result.error.code}: ${result.error.message})` : ''}${driver.resultDetail?.(result) ?? ''}`;
      driver.log(`migration ${spec.migrationId}: ${result.outcome}${detail}`);
      t.setPhase(result.outcome, result);
      return t.info();
    } catch (err) {
      // No channel: nothing was sent, the guest never paused.
      const e = toFerryError(err);
      driver.setState(before);
      t.emit({ type: 'aborted', code: e.code, message: e.message });
      t.setPhase('aborted');
      driver.log(`migration ${spec.migrationId}: aborted (${e.code}: ${e.message})`);
      throw e;
    } finally {
      unsubscribe();
      if (this.cancel === cancel) this.cancel = null;
    }
  }

  /**
   * A cancel of outgoing migration `id` (the operator's, or its destination dropped its copy):
   * accepted before switch-over (the engine stops, the guest runs on here), refused from the
   * switch-over decision on. Returns at once; the migration's own reply says how it ended.
   */
  cancelMigration(id: string, log: (message: string) => void, reason: CancelReason = 'operator'): { migrationId: string; cancelled: true } {
    const t = this.tracker;
    if (!t || t.role !== 'source' || t.migrationId !== id || !this.cancel) {
      throw new FerryError('ERR_FERRY_REFUSED', `no outgoing migration "${id}" runs in this guest process`);
    }
    if (t.phase !== 'running') throw new FerryError('ERR_FERRY_REFUSED', `migration "${id}" is ${t.phase}: nothing left to cancel`);
    if (t.switchingOver) {
      throw new FerryError(
        'ERR_FERRY_REFUSED',
        'switch-over already under way: the guest is paused for the hand-off, which the destination decides; it ends by itself, normally within the downtime limit (--max-downtime)',
      );
    }
    const why =
      reason === 'operator'
        ? 'cancelled by the operator'
        : "the destination's agent dropped its copy (it restarted, and recorded the migration not committed)";
    log(`migration ${id}: ${why}`);
    this.cancel.abort(new FerryError('ERR_FERRY_ABORTED', why));
    return { migrationId: id, cancelled: true };
  }
}
