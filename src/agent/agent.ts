/**
 * The host agent (`ferry host serve`): opens the state directory, serves the control API, keeps
 * the per-host migration limits. start() and stop() undo each other; stop() never touches guests
 * (they are their own processes and outlive the agent).
 */
import { loadBackend, onCryptoFallback, type Backend } from '../crypto/index.js';
import { measureSeal } from './seal-measure.js';
import { FerryError } from '../errors.js';
import { parseAddress } from '../common/address.js';
import { ControlServer, type HandlerTable } from './server.js';
import { cryptoThreadsPerMigration, StateDir } from './state.js';
import { SlotQueue } from './queue.js';
import { GuestManager } from './guests.js';
import { streamConsole } from './guest-console.js';
import { MigrationManager } from './migrations.js';
import type { Logger } from '../common/log.js';
import { FERRY_VERSION } from '../common/version.js';
import { formatBytes } from '../common/units.js';
import { cpuFeatures, freeMemoryBytes } from './host-facts.js';
import { DRIVERS, driverOf, type DriverAvailability } from '../guest/index.js';
import { PROTOCOL_VERSION } from '../control/protocol.js';
import os from 'node:os';
import { listenRouter, type MigrationRouter } from '../channel/index.js';
import { StateDirLock } from './dir-lock.js';
import { DEFAULT_MEMORY_RESERVE_BYTES, memoryRefusal } from '../control/admission.js';
import { AgentMetrics, serveMetrics, type MetricsServer } from './metrics.js';
import type { Address } from '../common/address.js';

export interface AgentOptions {
  dir: string;
  /** False: `--no-encryption`, an agent that cannot encrypt (standing in for an older host). */
  encryption: boolean;
  log: Logger;
  /** Serve Prometheus metrics on this address (`--metrics`, checked by metricsAddress). */
  metrics?: Address;
}

export class Agent {
  readonly outgoing: SlotQueue;
  readonly incoming: SlotQueue;
  readonly guests: GuestManager;
  readonly migrations: MigrationManager;
  private server: ControlServer | null = null;
  private router: MigrationRouter | null = null;
  private readonly metrics: AgentMetrics | null;
  private metricsServer: MetricsServer | null = null;
  /** The control address actually bound. */
  controlAddress = '';

  private constructor(
    readonly state: StateDir,
    readonly options: AgentOptions,
    readonly log: Logger,
    private readonly backend: Backend,
    private readonly lock: StateDirLock,
  ) {
    this.outgoing = new SlotQueue(state.config.limits.outgoing);
    this.incoming = new SlotQueue(state.config.limits.incoming);
    this.guests = new GuestManager(state, log);
    this.migrations = new MigrationManager({
      state,
      guests: this.guests,
      outgoing: this.outgoing,
      incoming: this.incoming,
      log,
      encrypts: options.encryption,
      cryptoThreads: cryptoThreadsPerMigration(state.config.limits),
      networks: () => this.router?.networks ?? state.config.networks.map((n) => n.listen),
      onEnded: (m) => this.metrics?.ended(m),
    });
    this.metrics = options.metrics
      ? new AgentMetrics({
          host: state.config.name,
          version: FERRY_VERSION,
          cryptoBackend: this.cryptoBackend,
          encrypts: options.encryption,
          outgoing: this.outgoing,
          incoming: this.incoming,
          jobs: () => this.migrations.jobs(),
        })
      : null;
  }

  /** The backend's name; the native backend names its GCM implementation too (vaes-avx512, vaes-avx2, evp): probe shows it. */
  get cryptoBackend(): string {
    const implementation = (this.backend as { implementation?: string }).implementation;
    return implementation ? `${this.backend.name}/${implementation}` : this.backend.name;
  }

  get name(): string {
    return this.state.config.name;
  }

  static async start(options: AgentOptions): Promise<Agent> {
    // A host directory (read only: nothing is written before the lock), then its lock before
    // anything else: a second agent on this directory would take over the first one's guests.
    await StateDir.readConfig(options.dir);
    const lock = await StateDirLock.acquire(options.dir);
    try {
      return await Agent.startLocked(options, lock);
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  private static async startLocked(options: AgentOptions, lock: StateDirLock): Promise<Agent> {
    const state = await StateDir.open(options.dir);
    // The agent's stderr carries JSON lines only: a fallback from the addon goes into its log.
    const unhear = onCryptoFallback((notice) => options.log.warn('native crypto addon unavailable', { notice }));
    let backend: Backend;
    try {
      backend = await loadBackend();
    } finally {
      unhear();
    }
    const log = options.log.child({ host: state.config.name });
    if (lock.tookOverFrom !== null) log.warn('took over the state directory of an agent that did not stop', { pid: lock.tookOverFrom });
    const agent = new Agent(state, options, log, backend, lock);
    try {
      await agent.guests.attachAll();
      await agent.migrations.recover();
      await agent.listen();
    } catch (err) {
      // Let go of the guests' sockets, or a failed start would keep the process alive without serving.
      agent.migrations.stop();
      agent.guests.close();
      throw err;
    }
    return agent;
  }

  private async listen(): Promise<void> {
    // Metrics and the data plane first: a host whose addresses are taken should not look ready.
    if (this.metrics && this.options.metrics) this.metricsServer = await serveMetrics(this.options.metrics, this.metrics);
    const listen = this.state.config.networks.map((n) => n.listen);
    try {
      this.router = await listenRouter(listen, (id, socket, head) => this.migrations.route(id, socket, head), {
        onRejected: (err, socket) =>
          this.log.warn('data connection dropped', { remote: socket.remoteAddress, code: err.code, reason: err.message }),
      });
    } catch (err) {
      await this.closeMetrics();
      const e = err as NodeJS.ErrnoException;
      throw new FerryError('ERR_FERRY_NETWORK', `cannot listen on the migration networks ${listen.join(', ')}: ${e.code ?? e.message}`);
    }
    this.server = new ControlServer({
      credentials: await this.state.credentials(),
      handlers: this.handlers(),
      hello: { agentVersion: FERRY_VERSION, host: this.name },
      log: this.log,
    });
    try {
      this.controlAddress = await this.server.listen(parseAddress(this.state.config.control, 'control address'));
    } catch (err) {
      await this.router.close();
      await this.closeMetrics();
      throw err;
    }
    this.log.info('agent ready', {
      control: this.controlAddress,
      networks: this.router.networks,
      encrypts: this.options.encryption,
      cryptoBackend: this.cryptoBackend,
      limits: this.state.config.limits,
      cryptoThreadsPerMigration: cryptoThreadsPerMigration(this.state.config.limits) ?? 'every core',
      pid: process.pid,
      ...(this.metricsServer ? { metrics: this.metricsServer.address } : {}),
    });
  }

  private async closeMetrics(): Promise<void> {
    await this.metricsServer?.close();
    this.metricsServer = null;
  }

  async stop(): Promise<void> {
    await this.server?.close();
    this.server = null;
    await this.router?.close();
    this.router = null;
    await this.closeMetrics();
    this.migrations.stop();
    this.guests.close();
    await this.lock.release();
    this.log.info('agent stopped');
  }

  get memoryReserveBytes(): number {
    return this.state.config.memoryReserveBytes ?? DEFAULT_MEMORY_RESERVE_BYTES;
  }

  /** Refuses a guest whose memory does not fit in what is free here less the reserve (the coordinator checks first; this is the rule). */
  private admitMemory(guest: string, memoryBytes: number, outcome: string): void {
    const host = { host: this.name, freeMemoryBytes: freeMemoryBytes(), memoryReserveBytes: this.memoryReserveBytes };
    const refusal = memoryRefusal(host, memoryBytes, `guest "${guest}" needs ${formatBytes(memoryBytes)} ${outcome}`);
    if (refusal) throw new FerryError('ERR_FERRY_REFUSED', refusal);
  }

  private handlers(): HandlerTable {
    const both = ['coordinator', 'host'] as const;
    const coordinator = ['coordinator'] as const;
    return {
      'guest.create': {
        roles: coordinator,
        timeoutMs: 120_000,
        run: ({ config }) => {
          this.admitMemory(config.name, config.memoryBytes, '(--memory) and was not created');
          return this.guests.create(config);
        },
      },
      'guest.list': { roles: coordinator, run: async () => ({ guests: await this.guests.list() }) },
      'guest.get': { roles: coordinator, run: ({ name }) => this.guests.get(name) },
      'guest.set': {
        roles: coordinator,
        run: ({ name, encryptedMigration }) => this.guests.setEncryptedMigration(name, encryptedMigration),
      },
      'guest.destroy': {
        roles: coordinator,
        timeoutMs: 120_000,
        run: async ({ name }) => {
          await this.guests.destroy(name);
          return { name };
        },
      },
      'guest.console': {
        roles: coordinator,
        timeoutMs: null, // follows until the client goes away; read to the end, it ends by itself
        run: (params, ctx) => streamConsole(this.guests, this.name, params, ctx),
      },
      capabilities: {
        roles: both,
        run: async () => {
          const drivers = await driverAvailability();
          return {
            host: this.name,
            agentVersion: FERRY_VERSION,
            protocol: PROTOCOL_VERSION,
            encrypts: this.options.encryption,
            cryptoBackend: this.cryptoBackend,
            cpuFeatures: cpuFeatures(),
            networks: this.state.config.networks,
            freeMemoryBytes: freeMemoryBytes(),
            totalMemoryBytes: os.totalmem(),
            memoryReserveBytes: this.memoryReserveBytes,
            hasSriov: this.state.config.hasSriov,
            limits: this.state.config.limits,
            cryptoThreadsPerMigration: cryptoThreadsPerMigration(this.state.config.limits) ?? null,
            running: { outgoing: this.outgoing.running, incoming: this.incoming.running },
            queued: { outgoing: this.outgoing.queued, incoming: this.incoming.queued },
            // What older CLIs read; the same answer as drivers.qemu (QEMU that runs guests, not just a binary on PATH).
            qemu: drivers.qemu?.available ?? false,
            drivers,
            guests: (await this.state.listGuests()).length,
          };
        },
      },
      'migration.prepare-incoming': {
        roles: coordinator,
        timeoutMs: null, // waits in the incoming queue for as long as it takes
        run: async (params, ctx) => {
          // A guest this host cannot run is refused before it takes a slot or a directory.
          this.admitMemory(params.guest.name, params.guest.memoryBytes, 'and was not moved');
          await driverOf(params.guest.driver).admit(params.guest, this.state.guestDir(params.guest.name));
          return this.migrations.prepareIncoming({ ...params, ...ctx.key }, ctx.signal, ctx.emit);
        },
      },
      'migration.start-outgoing': {
        roles: coordinator,
        timeoutMs: null, // streams until the migration's own limits end it
        run: (params, ctx) => this.migrations.startOutgoing({ ...params, ...ctx.key }, ctx.signal, ctx.emit),
      },
      'crypto.measure': { roles: coordinator, timeoutMs: 5000, run: () => measureSeal(this.backend) },
      'migration.status': { roles: both, run: async ({ migrationId }) => this.migrations.status(migrationId) },
      'migration.list': { roles: coordinator, run: async () => ({ host: this.name, migrations: this.migrations.jobs() }) },
      'migration.abort': {
        roles: coordinator,
        run: async ({ migrationId }) => ({ migrationId, decision: await this.migrations.abort(migrationId) }),
      },
      'migration.cancel': {
        roles: coordinator,
        timeoutMs: 120_000, // the engine stops at its next message; opening the channel may take longer
        run: ({ guest, migrationId }) => this.migrations.cancel(guest, migrationId),
      },
      'migration.settle': {
        roles: coordinator,
        run: async ({ migrationId, decision }) => ({ migrationId, decision: this.migrations.settle(migrationId, decision) }),
      },
      'migration.waiting': { roles: coordinator, run: ({ guest }) => this.migrations.waiting(guest) },
      'migration.outgoing': { roles: coordinator, run: ({ guest }) => this.migrations.outgoingOf(guest) },
      'migration.follow': {
        roles: coordinator,
        timeoutMs: null, // follows until the migration ends or the client goes away
        run: ({ migrationId }, ctx) => this.migrations.follow(migrationId, ctx.signal, ctx.emit),
      },
      'migration.fence': {
        roles: coordinator,
        run: async ({ migrationId }) => {
          await this.migrations.fence(migrationId);
          return { migrationId, decision: 'not-committed' as const };
        },
      },
      'migration.decided': {
        roles: ['host'],
        run: async ({ migrationId, decision }, ctx) => ({
          migrationId,
          decision: await this.migrations.decided(migrationId, decision, ctx.peer),
        }),
      },
      'migration.fenced': {
        roles: both,
        run: async ({ migrationId }, ctx) => ({ migrationId, dropped: await this.migrations.learnFence(migrationId, ctx.peer) }),
      },
      'migration.resolve': {
        // Asked by the source host of a migration that lost its channel; the coordinator may ask too.
        roles: both,
        run: async ({ migrationId }) => ({ migrationId, decision: await this.migrations.resolve(migrationId) }),
      },
    };
  }
}

/** Which guest drivers this host runs, and with what (the QEMU probe runs once, at the first ask). */
async function driverAvailability(): Promise<Record<string, DriverAvailability>> {
  const entries = await Promise.all(Object.values(DRIVERS).map(async (d) => [d.name, await d.availability()] as const));
  return Object.fromEntries(entries);
}
