/**
 * The synthetic driver's half of its guest process (src/guest/guest-process.ts runs the process):
 * one SyntheticGuest, and the migrations that move it out of this process or into it, with the
 * engine of src/migration running here on both sides.
 */
import type { Socket } from 'node:net';
import { pageCopier } from '../../crypto/index.js';
import { FerryError } from '../../errors.js';
import { migrateDestination } from '../../migration/destination.js';
import { InPlaceOpener } from '../../migration/in-place.js';
import { dataPayloadPool, receiveInto } from '../../migration/payload-pool.js';
import { migrateSource } from '../../migration/source.js';
import type { MigrationEvent, MigrationResult } from '../../migration/types.js';
import type { GuestCallContext } from '../control-server.js';
import { noSerialConsole } from '../console.js';
import type { GuestProcessContext, GuestProcessDriver } from '../guest-process.js';
import { OutgoingMigrations } from '../outgoing.js';
import { MigrationTracker, type MigrationInfo } from '../migration-tracker.js';
import { keyOfTrailer, type MigrateOutParams, type PrepareIncomingParams } from '../protocol.js';
import type { SyntheticConfig } from '../types.js';
import { SyntheticGuest } from './guest.js';
import { pageCountOf } from './layout.js';
import { corruptPageFromEnv } from './test-faults.js';
import { openIncoming, type IncomingTransport } from '../transport.js';

/** The most threads one seal/open ran on (what the crypto-thread limit bounds). */
function threadsDetail(result: MigrationResult): string {
  return result.cryptoThreads.peak > 0
    ? `; crypto on ${result.cryptoThreads.peak} thread${result.cryptoThreads.peak === 1 ? '' : 's'} at most`
    : '';
}

/** The error, if any, and the threads. */
function outcomeDetail(result: MigrationResult): string {
  return `${result.error ? ` (${result.error.code}: ${result.error.message})` : ''}${threadsDetail(result)}`;
}

const threadsText = (threads: number | undefined) =>
  threads === undefined ? 'crypto on every core' : `crypto on at most ${threads} thread${threads === 1 ? '' : 's'}`;

export class SyntheticGuestProcess implements GuestProcessDriver {
  readonly guest: SyntheticGuest;
  /** The current or last migration, out or in (its tracker), and the outgoing one's cancel. */
  private readonly migrations = new OutgoingMigrations();
  /** --incoming: the migration that brought the guest here (tracker moves on to later outgoing ones). */
  private arrival: MigrationTracker | null = null;
  /** The arrival's channel, which the data sockets the agent hands over join. */
  private incoming: IncomingTransport | null = null;
  /** The agent's commit or abort of the arrival, once the engine waits for it. */
  private decide: ((d: 'commit' | 'abort') => void) | null = null;

  constructor(private readonly ctx: GuestProcessContext<SyntheticConfig>) {
    this.guest = new SyntheticGuest(ctx.dir, ctx.config, {
      incoming: ctx.incoming,
      corruptPage: ctx.incoming ? corruptPageFromEnv(process.env, pageCountOf(ctx.config.memoryBytes)) : null,
    });
  }

  get summary(): string {
    return `${this.ctx.config.memoryBytes} bytes memory, ${this.ctx.config.diskBytes} bytes disk`;
  }

  /**
   * A source guest must not stop while its migration is running or unresolved. An incoming guest
   * may always stop: before commit that is an abort, after commit an ordinary stop.
   */
  busy(): string | null {
    return this.migrations.busy ? `a migration is ${this.migrations.tracker!.phase}` : null;
  }

  close(): Promise<void> {
    return this.guest.close();
  }

  readonly handlers: GuestProcessDriver['handlers'] = {
    status: () => ({
      ...this.guest.status(process.pid),
      workloadReady: this.guest.vcpu.ready,
      migration: this.migrations.tracker?.info() ?? null,
    }),
    pause: async () => {
      await this.guest.userPause();
      return this.guest.status(process.pid);
    },
    resume: () => {
      this.guest.userResume();
      return this.guest.status(process.pid);
    },
    throttle: (p) => {
      if (this.busy() !== null) throw new FerryError('ERR_FERRY_REFUSED', 'the migration sets the throttle while it runs');
      this.guest.setThrottle(p.percent);
      return this.guest.status(process.pid);
    },
    digest: async () => ({ digest: await this.guest.digest(), algorithm: 'sha256-ferry-guest-v1' }),
    console: () => noSerialConsole(this.guest.config.name, 'synthetic'),
    'migrate-out': (params, ctx) => this.migrateOut(params, ctx),
    'cancel-migration': (params) => this.migrations.cancelMigration(params.migrationId, (m) => this.ctx.log(m), params.reason),
    'prepare-incoming': (params, ctx) => this.prepareIncoming(params, ctx),
    migration: () => this.migrations.tracker?.info() ?? null,
    'await-migration': (_p, ctx) => {
      if (!this.migrations.tracker) throw new FerryError('ERR_FERRY_NOT_FOUND', 'no migration has run in this guest process');
      return this.migrations.tracker.follow(ctx);
    },
    commit: () => this.decideArrival('commit'),
    abort: () => this.decideArrival('abort'),
    'resume-after-abort': () => {
      const g = this.guest;
      if (g.state !== 'in-doubt')
        throw new FerryError('ERR_FERRY_REFUSED', `resume-after-abort is for a guest in doubt; this one is ${g.state}`);
      g.state = 'running';
      g.setThrottle(0);
      g.resume();
      this.migrations.tracker?.setPhase('aborted');
      this.ctx.log('in-doubt migration resolved: not committed at the destination; the guest runs here again');
      return g.status(process.pid);
    },
    finish: () => {
      const g = this.guest;
      if (g.state !== 'in-doubt' && g.state !== 'migrated')
        throw new FerryError('ERR_FERRY_REFUSED', `finish is for a guest handed over; this one is ${g.state}`);
      this.migrations.tracker?.setPhase('committed');
      this.ctx.log('migration resolved: committed at the destination; this copy stops');
      void this.ctx.exit(0);
      return { finished: true as const };
    },
  };

  private async migrateOut(params: MigrateOutParams, ctx: GuestCallContext<MigrationEvent>): Promise<MigrationInfo> {
    const guest = this.guest;
    // A guest that arrived here runs like any other once its arrival committed: it may move on,
    // and after an outgoing migration that did not (aborted, cancelled) try again.
    if (this.ctx.incoming && this.arrival?.phase !== 'committed')
      throw new FerryError('ERR_FERRY_REFUSED', 'an incoming guest cannot migrate out before its arrival commits');
    return this.migrations.run(params, ctx, {
      getState: () => guest.state,
      setState: (s) => (guest.state = s),
      log: (m) => this.ctx.log(m),
      detail: threadsText(params.cryptoThreads),
      resultDetail: threadsDetail,
      engine: (channel, spec, signal, emit) => migrateSource(channel, guest, { ...spec, signal }, emit),
    });
  }

  private async prepareIncoming(params: PrepareIncomingParams, ctx: GuestCallContext<never>): Promise<{ migrationId: string }> {
    const guest = this.guest;
    const log = (m: string): void => this.ctx.log(m);
    if (!this.ctx.incoming) throw new FerryError('ERR_FERRY_REFUSED', 'this guest was not started to receive a migration');
    if (this.arrival) throw new FerryError('ERR_FERRY_REFUSED', 'this incoming guest is already prepared');
    const spec = { ...params, ...keyOfTrailer(ctx.secret) };
    const t = new MigrationTracker('destination', spec.migrationId);
    this.migrations.tracker = t;
    this.arrival = t;
    // DATA payloads land in reused buffers, not gigabytes of fresh memory for the collector.
    const payloads = dataPayloadPool();
    // Encrypted memory DATA is opened straight into guest memory (in-place.ts); the rest into payloads.
    // FERRY_OPEN_IN_PLACE=0 turns it off: the A/B switch of docs/performance.md.
    const inPlace = process.env.FERRY_OPEN_IN_PLACE === '0' ? null : new InPlaceOpener(guest);
    let incoming: IncomingTransport;
    try {
      incoming = this.incoming = await openIncoming(spec, { allocatePayload: receiveInto(payloads), placePayload: inPlace?.place ?? null });
    } finally {
      spec.key.fill(0);
      spec.nonce.fill(0);
    }
    this.ctx.adoptDataSockets((socket: Socket, head: Uint8Array) => incoming.adopt(socket, head));
    log(`incoming migration ${spec.migrationId} prepared (${spec.mode}, ${threadsText(spec.cryptoThreads)})`);
    void migrateDestination(
      incoming.channel,
      guest,
      {
        migrationId: spec.migrationId,
        decide: () => new Promise((resolve) => (this.decide = resolve)),
        checkDevice: (device) => guest.checkDevice(device),
        resume: (device) => guest.startFromDevice(device),
        payloads,
        copyPages: pageCopier(),
        inPlace,
      },
      (e) => t.emit(e),
    ).then((result) => {
      log(`incoming migration ${spec.migrationId}: ${result.outcome}${outcomeDetail(result)}`);
      t.setPhase(result.outcome, result);
      // Not committed: this process never runs the guest. Give waiters a moment to hear it.
      if (result.outcome !== 'committed') setTimeout(() => void this.ctx.exit(1), 1000);
    });
    return { migrationId: spec.migrationId };
  }

  private async decideArrival(decision: 'commit' | 'abort'): Promise<MigrationInfo> {
    const t = this.migrations.tracker;
    if (!t || t.role !== 'destination') throw new FerryError('ERR_FERRY_REFUSED', 'no incoming migration here');
    if (t.phase !== 'ready-to-commit' || !this.decide) {
      throw new FerryError('ERR_FERRY_REFUSED', `cannot ${decision}: the incoming migration is ${t.phase}`);
    }
    const d = this.decide;
    this.decide = null;
    d(decision);
    await t.waitFinal();
    return t.info();
  }
}
