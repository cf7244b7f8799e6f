/**
 * A QEMU guest as its ferry process holds it: the QEMU that runs it (started, or adopted after the
 * previous ferry process died), the guest control protocol's handlers (src/guest/protocol.ts) on
 * top of QMP, and the migrations out and in (migrate-out.ts, migrate-in.ts).
 */
import { promises as fs, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import { FerryError } from '../../errors.js';
import type { MigrationEvent } from '../../migration/types.js';
import { readConsoleChunk } from '../console.js';
import type { GuestCallContext, GuestHandlers } from '../control-server.js';
import { MigrationTracker, type MigrationInfo } from '../migration-tracker.js';
import { OutgoingMigrations } from '../outgoing.js';
import { keyOfTrailer, type MigrateOutParams, type PrepareIncomingParams } from '../protocol.js';
import { openIncoming, type IncomingTransport } from '../transport.js';
import { diskBytesOf, type GuestState, type GuestStatus, type QemuConfig } from '../types.js';
import { CONSOLE_LOG } from './argv.js';
import { leaveSourceDisks } from './disks.js';
import { Qemu } from './hypervisor.js';
import { migrateQemuIn } from './migrate-in.js';
import { migrateQemuOut } from './migrate-out.js';
import { canDigest, ramDigest, RAM_DIGEST_ALGORITHM } from './ram-digest.js';
import { parseTestGuestLine } from './test-guest.js';

export interface QemuGuestHost {
  /** Ends the ferry process (after the reply in flight), removing the guest directory when asked. */
  exit(code: number, removeDir?: boolean): void;
  log(message: string): void;
  /** From now on the data sockets the agent hands over go to `adopt` (those held so far first). */
  adoptDataSockets(adopt: (socket: Socket, head: Uint8Array) => void): void;
}

export class QemuGuest {
  private qemu: Qemu | null = null;
  /** Incoming: the QEMU the migration started, until it commits (then it is `qemu`) or fails (then it is gone). */
  private arriving: Qemu | null = null;
  private state: GuestState = 'stopped';
  private readonly migrations = new OutgoingMigrations();
  /** Incoming: the migration that brings the guest here. */
  private arrival: MigrationTracker | null = null;
  private incoming: IncomingTransport | null = null;
  private decide: ((d: 'commit' | 'abort') => void) | null = null;

  constructor(
    readonly dir: string,
    readonly config: QemuConfig,
    readonly incomingMode: boolean,
    private readonly host: QemuGuestHost,
  ) {}

  /** Runs the guest: adopts the QEMU already running it, or starts one. An incoming guest waits for its migration instead. */
  async start(): Promise<void> {
    if (this.incomingMode) {
      this.state = 'incoming';
      return;
    }
    const adopted = await Qemu.adopt(this.config, this.dir);
    this.qemu = adopted ?? (await Qemu.start(this.config, this.dir));
    this.host.log(`${adopted ? 'adopted' : 'started'} QEMU pid ${this.qemu.pid}`);
    this.watch(this.qemu);
    const status = await this.qemu.qmp.queryStatus();
    this.state = status.running ? 'running' : 'paused';
  }

  /** A QEMU that exits behind ferry's back (crashed, killed) ends its guest: this process exits too. */
  private watch(qemu: Qemu): void {
    void qemu.qmp.closed.then(async () => {
      if (this.qemu !== qemu) return;
      await qemu.exited();
      if (this.qemu !== qemu) return;
      this.host.log('QEMU exited');
      this.crashed = true;
      this.state = 'stopped';
      if (!this.busy) this.host.exit(1);
    });
  }

  /** The guest's QEMU exited behind ferry's back: the guest is stopped, whatever a migration that was running says. */
  private crashed = false;

  /** A source migration running or unresolved: the process must not stop (the guest could end up nowhere). */
  get busy(): boolean {
    return this.migrations.busy;
  }

  async close(): Promise<void> {
    // An arrival that has not committed cannot go on without this process (it carries the
    // streams): its QEMU goes with it, rather than wait, paused, in a directory the agent drops.
    const arriving = this.arriving;
    this.arriving = null;
    await arriving?.kill().catch(() => {});
    await this.qemu?.qmp.close();
  }

  status(): GuestStatus {
    const c = this.config;
    return {
      name: c.name,
      state: this.state,
      pid: process.pid,
      memoryBytes: c.memoryBytes,
      diskBytes: diskBytesOf(c),
      nic: c.nic,
      opsPerSecond: this.consoleRate(),
      throttlePercent: 0,
      ...(this.qemu ? { hypervisorPid: this.qemu.pid } : {}),
    };
  }

  /** The test guest's pages rewritten a second, from its last two ticks on the console; 0 for other guests. */
  private consoleRate(): number {
    try {
      const text = readFileSync(path.join(this.dir, CONSOLE_LOG), 'utf8').slice(-4096);
      const ticks = text
        .split(/\r?\n/)
        .map((l) => {
          try {
            return parseTestGuestLine(l);
          } catch {
            return null;
          }
        })
        .filter((t) => t?.kind === 'tick');
      const [a, b] = ticks.slice(-2) as Array<{ seconds: number; dirtied: number }>;
      return a && b && b.seconds > a.seconds ? Math.round((b.dirtied - a.dirtied) / (b.seconds - a.seconds)) : 0;
    } catch {
      return 0;
    }
  }

  private requireQemu(action: string): Qemu {
    if (!this.qemu) throw new FerryError('ERR_FERRY_REFUSED', `cannot ${action}: this guest's QEMU does not run here (${this.state})`);
    return this.qemu;
  }

  /** The guest protocol's handlers but hello, stop and destroy, which the scaffold answers (calling stopQemu). */
  handlers(): Omit<GuestHandlers, 'hello' | 'stop' | 'destroy'> {
    return {
      status: () => ({ ...this.status(), workloadReady: true, migration: this.migrations.tracker?.info() ?? null }),
      pause: async () => {
        if (this.state !== 'running' && this.state !== 'paused')
          throw new FerryError('ERR_FERRY_REFUSED', `cannot pause a guest that is ${this.state}`);
        await this.requireQemu('pause').qmp.stop();
        this.state = 'paused';
        return this.status();
      },
      resume: async () => {
        if (this.state !== 'running' && this.state !== 'paused')
          throw new FerryError('ERR_FERRY_REFUSED', `cannot resume a guest that is ${this.state}`);
        await this.requireQemu('resume').qmp.cont();
        this.state = 'running';
        return this.status();
      },
      throttle: () => {
        throw new FerryError('ERR_FERRY_REFUSED', "a QEMU guest is throttled only by QEMU's auto-converge, during a migration");
      },
      // QEMU writes the serial port into the log whatever this process does: it is read from the file.
      console: ({ offset }) => readConsoleChunk(path.join(this.dir, CONSOLE_LOG), offset),
      digest: async () => {
        const qemu = this.requireQemu('digest');
        if ((await qemu.qmp.queryStatus()).running)
          throw new FerryError('ERR_FERRY_REFUSED', 'a digest of a running guest means nothing: pause it first');
        if (!canDigest(this.config.memoryBytes)) throw new FerryError('ERR_FERRY_REFUSED', 'this guest is too large for a RAM digest');
        return { digest: await ramDigest(qemu.qmp, this.dir, this.config.memoryBytes), algorithm: RAM_DIGEST_ALGORITHM };
      },
      'migrate-out': (params, ctx) => this.migrateOut(params, ctx),
      'cancel-migration': ({ migrationId, reason }) => this.migrations.cancelMigration(migrationId, (m) => this.host.log(m), reason),
      'prepare-incoming': (params, ctx) => this.prepareIncoming(params, ctx),
      migration: () => this.migrations.tracker?.info() ?? null,
      'await-migration': async (_p, ctx) => {
        if (!this.migrations.tracker) throw new FerryError('ERR_FERRY_NOT_FOUND', 'no migration has run in this guest process');
        return this.migrations.tracker.follow(ctx);
      },
      commit: () => this.decideIncoming('commit'),
      abort: () => this.decideIncoming('abort'),
      'resume-after-abort': async () => {
        if (this.state !== 'in-doubt')
          throw new FerryError('ERR_FERRY_REFUSED', `resume-after-abort is for a guest in doubt; this one is ${this.state}`);
        await this.requireQemu('resume').qmp.cont();
        this.state = 'running';
        this.migrations.tracker?.setPhase('aborted');
        this.host.log('in-doubt migration resolved: not committed at the destination; the guest runs here again');
        return this.status();
      },
      finish: async () => {
        if (this.state !== 'in-doubt' && this.state !== 'migrated')
          throw new FerryError('ERR_FERRY_REFUSED', `finish is for a guest handed over; this one is ${this.state}`);
        const inDoubt = this.state === 'in-doubt';
        this.migrations.tracker?.setPhase('committed');
        this.host.log('migration resolved: committed at the destination; this copy stops');
        await this.stopQemu();
        // Committed after a doubt: the engine never kept the images, which the agent's removal of this directory would take.
        if (inDoubt && this.config.disks?.length && this.migrations.tracker)
          await leaveSourceDisks(this.dir, this.config.disks, this.migrations.tracker.migrationId, false).catch((err: Error) =>
            this.host.log(`could not keep the source's disk images: ${err.message}`),
          );
        this.host.exit(0);
        return { finished: true as const };
      },
    };
  }

  /** Stops the guest's QEMU for good (stop, destroy, finish). */
  async stopQemu(): Promise<void> {
    const { qemu, arriving } = this;
    this.qemu = null;
    this.arriving = null;
    this.state = 'stopped';
    // A copy that has not committed must never run, and one that loaded everything would wait,
    // paused, for a `cont` long after this process and its directory are gone: killed, as a failed
    // arrival's is.
    await arriving?.kill().catch(() => {});
    await qemu?.stop();
  }

  private async migrateOut(params: MigrateOutParams, ctx: GuestCallContext<MigrationEvent>): Promise<MigrationInfo> {
    if (this.incomingMode && this.arrival?.phase !== 'committed')
      throw new FerryError('ERR_FERRY_REFUSED', 'an incoming guest cannot migrate out before its arrival commits');
    const qemu = this.requireQemu('migrate');
    try {
      return await this.migrations.run(params, ctx, {
        getState: () => this.state,
        // A migration that ends after its QEMU crashed does not bring the guest back to life.
        setState: (s) => (this.state = this.crashed ? 'stopped' : s),
        log: (m) => this.host.log(m),
        engine: (channel, { key: _k, nonce: _n, ...spec }, signal, emit) =>
          migrateQemuOut(channel, { config: this.config, dir: this.dir, qemu, spec, signal, emit }),
      });
    } finally {
      // The crash came while the migration held this process (watch): it goes now, its reply given.
      if (this.crashed && !this.busy) setTimeout(() => this.host.exit(1), 1000);
    }
  }

  private async prepareIncoming(params: PrepareIncomingParams, ctx: GuestCallContext<never>): Promise<{ migrationId: string }> {
    if (!this.incomingMode) throw new FerryError('ERR_FERRY_REFUSED', 'this guest was not started to receive a migration');
    if (this.arrival) throw new FerryError('ERR_FERRY_REFUSED', 'this incoming guest is already prepared');
    const spec = { ...params, ...keyOfTrailer(ctx.secret) };
    const t = new MigrationTracker('destination', spec.migrationId);
    this.migrations.tracker = t;
    this.arrival = t;
    try {
      this.incoming = await openIncoming(spec);
    } finally {
      spec.key.fill(0);
      spec.nonce.fill(0);
    }
    const incoming = this.incoming;
    this.host.adoptDataSockets((socket, head) => incoming.adopt(socket, head));
    this.host.log(`incoming migration ${spec.migrationId} prepared (${spec.mode})`);
    void migrateQemuIn(this.incoming.channel, {
      config: this.config,
      dir: this.dir,
      decide: () => new Promise((resolve) => (this.decide = resolve)),
      emit: (e) => t.emit(e),
      started: (qemu) => (this.arriving = qemu),
    }).then(({ result, qemu }) => {
      this.arriving = null;
      this.host.log(
        `incoming migration ${spec.migrationId}: ${result.outcome}${result.error ? ` (${result.error.code}: ${result.error.message})` : ''}`,
      );
      if (qemu) {
        this.qemu = qemu;
        this.state = 'running';
        this.watch(qemu);
      }
      t.setPhase(result.outcome, result);
      // Not committed: this process never runs the guest. Give waiters a moment to hear it.
      if (result.outcome !== 'committed') setTimeout(() => this.host.exit(1), 1000);
    });
    return { migrationId: spec.migrationId };
  }

  private async decideIncoming(decision: 'commit' | 'abort'): Promise<MigrationInfo> {
    const t = this.migrations.tracker;
    if (!t || t.role !== 'destination') throw new FerryError('ERR_FERRY_REFUSED', 'no incoming migration here');
    if (t.phase !== 'ready-to-commit' || !this.decide)
      throw new FerryError('ERR_FERRY_REFUSED', `cannot ${decision}: the incoming migration is ${t.phase}`);
    const d = this.decide;
    this.decide = null;
    // Committed from here (the agent recorded it): that QEMU is the guest, stopped as one, never killed as an arrival.
    if (decision === 'commit' && this.arriving) [this.qemu, this.arriving] = [this.arriving, null];
    d(decision);
    await t.waitFinal();
    return t.info();
  }

  /** Removes what a QEMU leaves in the directory (its sockets), for a clean exit. */
  async cleanup(): Promise<void> {
    for (const f of ['qmp.sock', 'migrate-out.sock', 'migrate-in.sock']) await fs.rm(path.join(this.dir, f), { force: true });
  }
}
