/**
 * The agent's guests: records in the state directory, processes run by the guest driver
 * (src/guest). A guest process outlives its agent; a starting agent re-attaches to every guest it
 * has a record of. Operations on one guest are serialized, so a create and a destroy of the same
 * name cannot interleave.
 */
import { promises as fs } from 'node:fs';
import { FerryError } from '../errors.js';
import { attachGuest, driverOf, startGuest, type GuestClient } from '../guest/index.js';
import type { EncryptedMigration, GuestConfig, GuestCreateRequest } from '../guest/types.js';
import type { GuestInfo } from '../control/protocol.js';
import type { GuestRecord, StateDir } from './state.js';
import type { Logger } from '../common/log.js';
import { KeyedLock } from '../common/keyed-lock.js';

/** A status query that takes longer than this reports the guest as it was last known. */
const STATUS_TIMEOUT_MS = 5_000;

export class GuestManager {
  private readonly clients = new Map<string, GuestClient>();
  private readonly locks = new KeyedLock();

  constructor(
    private readonly state: StateDir,
    private readonly log: Logger,
  ) {}

  private get host(): string {
    return this.state.config.name;
  }

  /** Runs `fn` after every earlier operation on guest `name` has finished. */
  private exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(name, fn);
  }

  /** Re-attaches to every guest process that survived the previous agent. */
  async attachAll(): Promise<void> {
    for (const record of await this.state.listGuests()) {
      const client = await this.client(record.config.name);
      this.log.info(client ? 'guest re-attached' : 'guest not running', { guest: record.config.name, pid: client?.pid ?? null });
    }
  }

  /** The control connection to a running guest, re-attaching when the last one closed; null when it does not run. */
  async client(name: string): Promise<GuestClient | null> {
    const known = this.clients.get(name);
    if (known) return known;
    const client = (await attachGuest(this.state.guestDir(name))) ?? (await this.revive(name));
    if (client) this.adopt(name, client);
    return client;
  }

  /**
   * A guest whose process died while the guest itself runs on (a QEMU outlives the ferry process
   * that supervises it): a new process adopts it. Incoming guests are left to the migration's recovery.
   */
  private async revive(name: string): Promise<GuestClient | null> {
    const record = await this.state.readGuest(name).catch(() => null);
    if (!record || record.incoming) return null;
    const dir = this.state.guestDir(name);
    if (!driverOf(record.config.driver).outlivesProcess(dir, record.config)) return null;
    this.log.warn('guest process gone, its guest still runs: starting one to adopt it', { guest: name });
    try {
      return await startGuest(dir, record.config);
    } catch {
      // Another caller revived it first.
      return attachGuest(dir);
    }
  }

  private adopt(name: string, client: GuestClient): void {
    this.clients.set(name, client);
    void client.closed.then(() => {
      if (this.clients.get(name) === client) this.clients.delete(name);
    });
  }

  private async record(name: string): Promise<GuestRecord> {
    try {
      return await this.state.readGuest(name);
    } catch (err) {
      if ((err as FerryError).code === 'ERR_FERRY_NOT_FOUND')
        throw new FerryError('ERR_FERRY_NOT_FOUND', `no guest "${name}" on host ${this.host}`);
      throw err;
    }
  }

  private async info(record: GuestRecord): Promise<GuestInfo> {
    const { config } = record;
    const base: GuestInfo = {
      ...config,
      host: this.host,
      state: 'stopped',
      pid: null,
      opsPerSecond: null,
      workloadReady: null,
      generation: record.generation ?? 0,
    };
    const client = await this.client(config.name);
    if (!client) return base;
    let timer: NodeJS.Timeout | undefined;
    try {
      const status = await Promise.race([
        client.status(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new FerryError('ERR_FERRY_TIMEOUT', 'status timed out')), STATUS_TIMEOUT_MS);
        }),
      ]);
      return { ...base, state: status.state, pid: status.pid, opsPerSecond: status.opsPerSecond, workloadReady: status.workloadReady };
    } catch (err) {
      // Not "running": a guest process that does not answer may be one handed over a moment ago,
      // paused for good and exiting, while its destination runs the guest.
      this.log.warn('guest status failed', { guest: config.name, err });
      return { ...base, state: 'unknown', pid: client.pid };
    } finally {
      clearTimeout(timer);
    }
  }

  async list(): Promise<GuestInfo[]> {
    return Promise.all((await this.state.listGuests()).map((r) => this.info(r)));
  }

  async get(name: string): Promise<GuestInfo> {
    return this.info(await this.record(name));
  }

  async create(request: GuestCreateRequest): Promise<GuestInfo> {
    return this.exclusive(request.name, async () => {
      const exists = await this.state.readGuest(request.name).then(
        () => true,
        () => false,
      );
      if (exists) throw new FerryError('ERR_FERRY_INPUT', `guest "${request.name}" already exists on host ${this.host}`);
      if (request.nic === 'sriov' && !this.state.config.hasSriov) {
        throw new FerryError(
          'ERR_FERRY_REFUSED',
          `host ${this.host} has no passthrough-class NIC for --nic sriov (hosts get one with \`host init --sriov\`)`,
        );
      }
      // Before anything is made: a host without QEMU says so, and has no directory to clean up.
      const driver = driverOf(request.driver);
      const availability = await driver.availability();
      if (!availability.available) {
        throw new FerryError(
          'ERR_FERRY_REFUSED',
          `host ${this.host} cannot run ${request.driver} guests: ${availability.detail}; guest "${request.name}" was not created`,
        );
      }
      const dir = this.state.guestDir(request.name);
      await fs.rm(dir, { recursive: true, force: true });
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      let config: GuestConfig;
      try {
        // The driver makes the whole config here, on the host that runs the guest (QEMU: accelerator, uuid, boot files).
        config = await driver.create(request, dir);
      } catch (err) {
        await fs.rm(dir, { recursive: true, force: true });
        throw err;
      }
      const record: GuestRecord = { config, createdAt: new Date().toISOString() };
      // The record first: an agent that dies while the guest starts finds it on restart.
      await this.state.writeGuest(record);
      let client: GuestClient;
      try {
        client = await startGuest(dir, config);
      } catch (err) {
        await this.state.removeGuest(config.name);
        await fs.rm(this.state.guestDir(config.name), { recursive: true, force: true });
        throw err;
      }
      this.adopt(config.name, client);
      this.log.info('guest created', { guest: config.name, pid: client.pid, memoryBytes: config.memoryBytes });
      return this.info(record);
    });
  }

  async setEncryptedMigration(name: string, mode: EncryptedMigration): Promise<GuestInfo> {
    return this.exclusive(name, async () => {
      const record = await this.record(name);
      const updated: GuestRecord = { ...record, config: { ...record.config, encryptedMigration: mode } };
      await this.state.writeGuest(updated);
      this.log.info('guest changed', { guest: name, encryptedMigration: mode });
      return this.info(updated);
    });
  }

  /** Stops the guest process and deletes the guest: memory, disk, record. */
  async destroy(name: string): Promise<void> {
    return this.exclusive(name, async () => {
      await this.record(name);
      const client = await this.client(name);
      if (client) await client.destroy();
      await fs.rm(this.state.guestDir(name), { recursive: true, force: true });
      await this.state.removeGuest(name);
      this.log.info('guest destroyed', { guest: name });
    });
  }

  /**
   * Reserves guest `config.name` for an incoming migration: its record, marked incoming, then
   * `start()` (the incoming guest process). Undone when `start` fails.
   */
  async beginIncoming<T extends { client: GuestClient }>(
    config: GuestConfig,
    arrival: { migrationId: string; generation: number },
    start: () => Promise<T>,
  ): Promise<T> {
    const { migrationId, generation } = arrival;
    return this.exclusive(config.name, async () => {
      const existing = await this.state.readGuest(config.name).catch(() => null);
      if (existing) throw new FerryError('ERR_FERRY_INPUT', alreadyHere(config.name, this.host, existing, generation));
      await this.state.writeGuest({ config, createdAt: new Date().toISOString(), incoming: migrationId, generation });
      try {
        const started = await start();
        this.adopt(config.name, started.client);
        return started;
      } catch (err) {
        await this.forgetNow(config.name);
        throw err;
      }
    });
  }

  /** The incoming guest is this host's now: its record loses the incoming mark. */
  async commitIncoming(name: string): Promise<void> {
    return this.exclusive(name, async () => {
      const { incoming: _, ...record } = await this.record(name);
      await this.state.writeGuest(record);
    });
  }

  /** Drops a guest that is not (or no longer) this host's: process killed if any, directory and record removed. */
  async forget(name: string): Promise<void> {
    return this.exclusive(name, () => this.forgetNow(name));
  }

  private async forgetNow(name: string): Promise<void> {
    const dir = this.state.guestDir(name);
    const client = this.clients.get(name) ?? (await attachGuest(dir).catch(() => null));
    if (client) await client.destroy().catch(() => client.close());
    this.clients.delete(name);
    // A guest process killed leaves what it ran (a paused incoming QEMU): that goes with it.
    const record = await this.state.readGuest(name).catch(() => null);
    if (record && (await driverOf(record.config.driver).endLeft(dir, record.config)))
      this.log.warn('ended what the guest process had left running', { guest: name });
    await fs.rm(dir, { recursive: true, force: true });
    await this.state.removeGuest(name);
  }

  /** Every guest record, for recovery after a restart. */
  records(): Promise<GuestRecord[]> {
    return this.state.listGuests();
  }

  async recordOf(name: string): Promise<GuestRecord> {
    return this.record(name);
  }

  /** Closes the control connections; the guest processes keep running. */
  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

/** Why a guest cannot arrive where a record of it already is; a copy of an older generation is a stale one, and says how to clear it. */
function alreadyHere(name: string, host: string, existing: GuestRecord, arriving: number): string {
  const generation = existing.generation ?? 0;
  if (generation >= arriving) return `guest "${name}" already exists on host ${host}`;
  return (
    `host ${host} holds a stale copy of guest "${name}" (generation ${generation}; the guest arriving is generation ${arriving}): ` +
    `its state directory is older than the guest's moves. Remove that copy with \`ferry vm destroy ${name} --host ${host}\` and move again`
  );
}
