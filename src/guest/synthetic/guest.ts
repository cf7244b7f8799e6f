/**
 * A synthetic guest inside its process: memory slots, dirty logs, optional disk, and the workload
 * worker; what the migration engine reads (source) or writes (destination). Which calls are
 * allowed depends on the state: a guest handed over to another host never runs here again.
 */
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import { FerryError } from '../../errors.js';
import type { DestinationGuest, SourceGuest } from '../../migration/types.js';
import type { GuestState, GuestStatus, SyntheticConfig } from '../types.js';
import { guestDigest } from './digest.js';
import { DirtyLog } from './dirty-log.js';
import { DiskImage } from './disk.js';
import { BLOCK_SIZE, PAGE_SIZE } from './layout.js';
import { GuestMemory } from './memory.js';
import { pageCorrupter } from './test-faults.js';
import { Vcpu } from './vcpu.js';
import type { WorkloadDeviceState } from './workloads.js';

export const DISK_FILE = 'disk.img';

export class SyntheticGuest implements SourceGuest, DestinationGuest {
  readonly config: SyntheticConfig;
  readonly memory: GuestMemory;
  readonly pageLog: DirtyLog;
  readonly disk: DiskImage | null;
  readonly blockLog: DirtyLog;
  readonly vcpu: Vcpu;
  readonly pageSize = PAGE_SIZE;
  readonly blockSize = BLOCK_SIZE;
  state: GuestState;
  /** The agent asked for a pause (a migration that gives up restores this, not "running"). */
  private userPaused = false;
  /** Test only: set when FERRY_TEST_CORRUPT_PAGE armed this incoming guest (test-faults.ts). */
  readonly pagesLanded?: (first: number, count: number, zero: boolean) => void;

  /** `corruptPage`: test only, the page to damage as it lands (test-faults.ts). */
  constructor(dir: string, config: SyntheticConfig, options: { incoming: boolean; corruptPage?: number | null }) {
    this.config = config;
    this.memory = new GuestMemory(config.memoryBytes);
    this.pageLog = new DirtyLog(this.memory.pageCount);
    this.disk = config.diskBytes > 0 ? DiskImage.open(join(dir, DISK_FILE), config.diskBytes, { fresh: options.incoming }) : null;
    this.blockLog = new DirtyLog(this.disk?.blockCount ?? 0);
    this.vcpu = new Vcpu(
      {
        memoryBytes: config.memoryBytes,
        slots: this.memory.buffers,
        pageLog: this.pageLog.buffer,
        diskPath: this.disk?.path ?? null,
        diskBytes: config.diskBytes,
        blockLog: this.disk ? this.blockLog.buffer : null,
      },
      config.workload,
      randomInt(1, 2 ** 31),
    );
    if (options.incoming && options.corruptPage != null) this.pagesLanded = pageCorrupter(this.memory, options.corruptPage);
    this.state = options.incoming ? 'incoming' : 'running';
    if (!options.incoming) this.vcpu.start(null);
  }

  // --- geometry, as the engine sees it
  get memoryBytes(): number {
    return this.config.memoryBytes;
  }
  get diskBytes(): number {
    return this.config.diskBytes;
  }
  get pageCount(): number {
    return this.memory.pageCount;
  }
  get blockCount(): number {
    return this.disk?.blockCount ?? 0;
  }

  status(pid: number): GuestStatus {
    const c = this.config;
    return {
      name: c.name,
      state: this.state,
      pid,
      memoryBytes: c.memoryBytes,
      diskBytes: c.diskBytes,
      workload: c.workload,
      nic: c.nic,
      opsPerSecond: this.vcpu.opsPerSecond,
      throttlePercent: this.vcpu.throttlePercent,
    };
  }

  private expect(allowed: GuestState[], action: string): void {
    if (!allowed.includes(this.state)) throw new FerryError('ERR_FERRY_REFUSED', `cannot ${action} a guest that is ${this.state}`);
  }

  // --- the agent's controls
  async userPause(): Promise<void> {
    this.expect(['running', 'paused', 'migrating'], 'pause');
    this.userPaused = true;
    await this.vcpu.pause();
    if (this.state === 'running') this.state = 'paused';
  }

  userResume(): void {
    this.expect(['running', 'paused', 'migrating'], 'resume');
    this.userPaused = false;
    if (this.state === 'paused') this.state = 'running';
    this.vcpu.resume();
  }

  setThrottle(percent: number): void {
    this.vcpu.setThrottle(percent);
  }

  get throttlePercent(): number {
    return this.vcpu.throttlePercent;
  }

  digest(): Promise<string> {
    return guestDigest(this.memory, this.disk);
  }

  // --- the source engine's view
  memoryPages(first: number, count: number): Uint8Array {
    return this.memory.pages(first, count);
  }
  pageRunLimit(first: number, max: number): number {
    return this.memory.runLimit(first, max);
  }
  readBlocks(first: number, count: number, into: Uint8Array): Uint8Array {
    return this.disk!.readBlocks(first, count, into);
  }
  writeBlocks(first: number, count: number, data: Uint8Array): void {
    this.disk!.writeBlocks(first, count, data);
  }
  harvestDirtyPages(): Uint32Array {
    return this.pageLog.harvest();
  }
  harvestDirtyBlocks(): Uint32Array {
    return this.blockLog.harvest();
  }
  countDirtyPages(): number {
    return this.pageLog.count();
  }
  countDirtyBlocks(): number {
    return this.blockLog.count();
  }
  clearDirtyLogs(): void {
    this.pageLog.clear();
    this.blockLog.clear();
  }
  /** Switch-over pause. */
  pause(): Promise<void> {
    return this.vcpu.pause();
  }
  /** After a migration that gave up: back to what the agent last asked for. */
  resume(): void {
    if (!this.userPaused) this.vcpu.resume();
  }
  deviceState(): object {
    const s = this.vcpu.deviceState();
    // A guest its agent had paused arrives paused.
    return { workload: this.config.workload.kind, state: s, paused: this.userPaused };
  }

  /** Destination, on commit: start the workload where the source left it. */
  /**
   * Checks a device state from the source (input, like any message) before the destination can
   * be ready to commit, so that starting from it cannot fail afterwards.
   */
  checkDevice(device: object): void {
    const bad = (why: string): FerryError => new FerryError('ERR_FERRY_FRAME', `bad device state: ${why}`);
    const d = device as { workload?: unknown; state?: unknown; paused?: unknown };
    if (d.workload !== this.config.workload.kind)
      throw bad(`it is for workload ${String(d.workload)}, this guest runs ${this.config.workload.kind}`);
    if (d.paused !== undefined && typeof d.paused !== 'boolean') throw bad('paused must be true or false');
    if (d.state === null || d.state === undefined) return;
    const st = d.state as Record<string, unknown>;
    if (typeof st !== 'object' || st.kind !== this.config.workload.kind) throw bad('workload state of another kind');
    const count = (v: unknown, name: string): void => {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${name} must be a non-negative integer`);
    };
    count(st.rng, 'rng');
    if ((st.rng as number) > 0xffffffff) throw bad('rng must fit 32 bits');
    count(st.setupDone, 'setupDone');
    count(st.ops, 'ops');
    if (st.kv !== undefined) {
      const kv = st.kv as Record<string, unknown> | null;
      if (!kv || typeof kv !== 'object') throw bad('kv counters must be an object');
      for (const k of ['gets', 'sets', 'hits', 'misses', 'corrupt']) count(kv[k], `kv.${k}`);
    }
  }

  startFromDevice(device: object): void {
    this.checkDevice(device);
    const d = device as { state?: WorkloadDeviceState | null; paused?: unknown };
    this.userPaused = d.paused === true;
    this.vcpu.start(d.state ?? null, this.userPaused);
    this.state = this.userPaused ? 'paused' : 'running';
  }

  async close(): Promise<void> {
    await this.vcpu.stop();
    this.disk?.close();
    this.state = 'stopped';
  }
}
