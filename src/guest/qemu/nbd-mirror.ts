/**
 * Disks without shared storage, moved the way QEMU and libvirt move them: the destination's QEMU
 * exports its fresh images over NBD, writable, on a unix socket in a 0700 directory of the guest
 * directory; the source's QEMU mirrors each disk into an NBD client (`blockdev-mirror`, sync full,
 * write-blocking copy mode, so a guest writing steadily cannot outrun it), whose connection ferry
 * carries as one more byte stream of the channel, sealed and across failover like QEMU's
 * migration connections. RAM starts once every mirror is ready (in sync); at the source's pause
 * before switch-over the mirrors end with `block-job-cancel` of a ready job, which leaves the
 * target an exact copy and the source's disk in use by the source only (QEMU's own semantics for
 * a ready mirror; `block-job-complete` would switch the guest over to the NBD target).
 */
import { createServer, type Server } from 'node:net';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { FerryError } from '../../errors.js';
import { withTimeout } from '../../common/async.js';
import type { StreamMux } from '../../channel/streams.js';
import type { MigrationEvent } from '../../migration/types.js';
import type { QemuDisk } from '../types.js';
import { diskNode, mirroredDisks } from './disks.js';
import { isPlainObject } from './qmp-schema.js';
import type { QmpClient, QmpEvent } from './qmp.js';
import { StatusWatch } from './progress.js';

/** Stream ids of disks: above QEMU's migration connections (the main one and up to 16 multifd). */
export const DISK_STREAM_BASE = 32;
/** The destination's NBD server socket and the source's NBD client sockets live in 0700 directories here. */
export const NBD_DIR = 'nbd';
export const NBD_SERVER_SOCKET = 'server.sock';
const POLL_MS = 200;
const END_POLL_MS = 10;
const JOB_END_TIMEOUT_MS = 60_000;

export const isDiskStream = (id: number): boolean => id >= DISK_STREAM_BASE;
export const nbdServerSocket = (dir: string): string => path.join(dir, NBD_DIR, NBD_SERVER_SOCKET);
const exportName = (index: number) => `ferry-disk${index}`;
const jobId = (index: number) => `ferry-mirror-disk${index}`;
const targetNode = (index: number) => `ferry-nbd-disk${index}`;

async function privateDir(dir: string): Promise<string> {
  const at = path.join(dir, NBD_DIR);
  await fs.mkdir(at, { recursive: true, mode: 0o700 });
  await fs.chmod(at, 0o700);
  return at;
}

/** The destination's side: its QEMU's NBD server with one writable export per mirrored disk. */
export class DiskExports {
  private running = false;

  private constructor(
    private readonly qmp: QmpClient,
    private readonly dir: string,
  ) {}

  /** Starts the NBD server and the exports; none for a guest whose disks are all shared (or that has none). */
  static async start(qmp: QmpClient, dir: string, disks: readonly QemuDisk[]): Promise<DiskExports | null> {
    const mirrored = mirroredDisks(disks);
    if (mirrored.length === 0) return null;
    await privateDir(dir);
    const socket = nbdServerSocket(dir);
    await fs.rm(socket, { force: true });
    const exports = new DiskExports(qmp, dir);
    await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
    exports.running = true;
    await fs.chmod(socket, 0o600);
    for (const { index } of mirrored) {
      // Exporting an inactive (incoming) node activates it for writing: QEMU's own design for this.
      await qmp.execute('block-export-add', {
        type: 'nbd',
        id: exportName(index),
        'node-name': diskNode(index),
        name: exportName(index),
        writable: true,
      });
    }
    return exports;
  }

  /** Ends the exports (the mirror finished, or the migration failed): nothing more can write through them. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    await this.qmp.execute('nbd-server-stop').catch(() => {});
    await fs.rm(nbdServerSocket(this.dir), { force: true });
  }
}

/** One disk's mirror, as the source follows it. */
interface Mirror {
  index: number;
  disk: QemuDisk;
  server: Server | null;
  /** QEMU's figures of the job (query-block-jobs): bytes done and to do; the job's end. */
  offset: number;
  len: number;
  ready: boolean;
  ended: boolean;
  error: string | null;
  /** The NBD node exists in QEMU (blockdev-add answered). */
  attached: boolean;
}

export interface DiskFigures {
  /** Disk bytes the mirrors wrote to the destination (QEMU's job offsets): apart from RAM. */
  bytes: number;
  /** Virtual bytes of the disks the migration copied, and of those it left on shared storage. */
  mirroredBytes: number;
  sharedBytes: number;
  /** Per disk, in device order. */
  disks: { index: number; bytes: number; shared: boolean; mirroredBytes: number }[];
  /** Source: ms from the first blockdev-mirror until every mirror was ready; null without mirrors. */
  readyMs: number | null;
}

/** The source's side: a mirror per disk without shared storage, each through its own stream. */
export class DiskMirrors {
  private readonly mirrors: Mirror[];
  private readonly wake = new StatusWatch();
  private unsubscribe: (() => void) | null = null;
  private started = 0;
  private readyMs: number | null = null;

  constructor(
    private readonly qmp: QmpClient,
    private readonly dir: string,
    private readonly disks: readonly QemuDisk[],
    private readonly mux: StreamMux,
  ) {
    this.mirrors = mirroredDisks(disks).map(({ index, disk }) => ({
      index,
      disk,
      server: null,
      offset: 0,
      len: disk.bytes,
      ready: false,
      ended: false,
      error: null,
      attached: false,
    }));
  }

  get any(): boolean {
    return this.mirrors.length > 0;
  }

  /**
   * Starts each mirror: a unix socket here for QEMU's NBD client, its one connection opened as
   * stream DISK_STREAM_BASE + index, then `blockdev-mirror` into it.
   */
  async start(): Promise<void> {
    if (!this.any) return;
    this.unsubscribe = this.qmp.onEvent((e) => this.onEvent(e));
    const at = await privateDir(this.dir);
    this.started = performance.now();
    for (const m of this.mirrors) {
      const file = path.join(at, `disk${m.index}.sock`);
      await fs.rm(file, { force: true });
      let taken = false;
      m.server = createServer({ allowHalfOpen: true }, (socket) => {
        // One NBD connection per disk: QEMU's client does not reconnect (reconnect-delay 0).
        if (taken) return void socket.destroy();
        taken = true;
        try {
          this.mux.open(DISK_STREAM_BASE + m.index, socket);
        } catch {
          socket.destroy();
        }
      });
      await new Promise<void>((resolve, reject) => {
        m.server!.once('error', reject);
        m.server!.listen(file, () => resolve());
      });
      await fs.chmod(file, 0o600);
      await this.qmp.execute(
        'blockdev-add',
        { driver: 'nbd', 'node-name': targetNode(m.index), server: { type: 'unix', path: file }, export: exportName(m.index) },
        { timeoutMs: 60_000 },
      );
      m.attached = true;
      await this.qmp.execute('blockdev-mirror', {
        'job-id': jobId(m.index),
        device: diskNode(m.index),
        target: targetNode(m.index),
        sync: 'full',
        'copy-mode': 'write-blocking',
      });
    }
  }

  private onEvent(e: QmpEvent): void {
    if (!e.event.startsWith('BLOCK_JOB_')) return;
    const m = this.mirrors.find((x) => jobId(x.index) === e.data.device);
    if (!m) return;
    if (typeof e.data.offset === 'number') m.offset = e.data.offset;
    if (typeof e.data.len === 'number') m.len = e.data.len;
    if (e.event === 'BLOCK_JOB_READY') m.ready = true;
    if (e.event === 'BLOCK_JOB_ERROR') m.error ??= `an I/O error (${String(e.data.operation)})`;
    if (e.event === 'BLOCK_JOB_COMPLETED' || e.event === 'BLOCK_JOB_CANCELLED') {
      m.ended = true;
      if (typeof e.data.error === 'string') m.error ??= e.data.error;
      else if (e.event === 'BLOCK_JOB_CANCELLED') m.error ??= 'the job was cancelled';
    }
    this.wake.set(e.event);
  }

  /** Until every mirror is in sync, reporting progress; `stop` says why to give up (cancel, deadline, channel). */
  async ready(stop: () => FerryError | null, emit: (e: MigrationEvent) => void): Promise<void> {
    if (!this.any) return;
    for (;;) {
      const why = stop();
      if (why) throw why;
      await this.poll();
      const failed = this.mirrors.find((m) => m.error !== null || m.ended);
      if (failed)
        throw new FerryError(
          'ERR_FERRY_QEMU',
          `the mirror of disk ${failed.index + 1} failed: ${failed.error ?? 'it ended before it was ready'}`,
        );
      emit(this.progress());
      if (this.mirrors.every((m) => m.ready)) break;
      await this.wake.changed(POLL_MS);
    }
    this.readyMs = Math.round(performance.now() - this.started);
  }

  /** Disk progress, for the operator: bytes mirrored apart from memory. */
  progress(): MigrationEvent {
    return {
      type: 'disks',
      bytesDone: this.mirrors.reduce((s, m) => s + m.offset, 0),
      bytesTotal: this.mirrors.reduce((s, m) => s + m.len, 0),
      ready: this.mirrors.filter((m) => m.ready).length,
      disks: this.mirrors.length,
      elapsedMs: Math.round(performance.now() - this.started),
    };
  }

  private async poll(): Promise<void> {
    const jobs = await this.qmp.execute('query-block-jobs');
    if (!Array.isArray(jobs)) throw new FerryError('ERR_FERRY_QEMU', 'QEMU answered query-block-jobs with something malformed');
    for (const j of jobs) {
      if (!isPlainObject(j)) continue;
      const m = this.mirrors.find((x) => jobId(x.index) === j.device);
      if (!m) continue;
      if (Number.isSafeInteger(j.offset)) m.offset = j.offset as number;
      if (Number.isSafeInteger(j.len)) m.len = j.len as number;
      if (j.ready === true) m.ready = true;
    }
  }

  /**
   * At the pause before switch-over (the guest writes nothing now): each ready mirror ended with
   * `block-job-cancel`, which waits until the target has every byte and leaves the source's disk
   * the guest's; then the NBD clients are closed, before QEMU inactivates its block nodes.
   */
  async complete(): Promise<void> {
    if (!this.any) return;
    for (const m of this.mirrors) {
      if (m.error) throw new FerryError('ERR_FERRY_QEMU', `the mirror of disk ${m.index + 1} failed: ${m.error}`);
      if (!m.ready) throw new FerryError('ERR_FERRY_INTERNAL', `the mirror of disk ${m.index + 1} is not ready`);
      await this.qmp.execute('block-job-cancel', { device: jobId(m.index) });
    }
    await this.jobsEnded();
    const failed = this.mirrors.find((m) => m.error !== null);
    if (failed) throw new FerryError('ERR_FERRY_QEMU', `the mirror of disk ${failed.index + 1} did not finish: ${failed.error}`);
    await this.detach();
  }

  private async jobsEnded(): Promise<void> {
    await withTimeout(
      (async () => {
        for (;;) {
          // A job already gone from query-block-jobs has ended (its event may have come before we listened).
          const jobs = await this.qmp.execute('query-block-jobs').catch(() => null);
          if (Array.isArray(jobs))
            for (const m of this.mirrors)
              if (!jobs.some((j) => isPlainObject(j) && j.device === jobId(m.index)) && !m.ended) {
                m.ended = true;
                m.error ??= m.ready ? null : 'the job ended before it was ready';
              }
          if (this.mirrors.every((m) => m.ended)) return;
          // The guest is paused while the mirrors end: look again soon, not at the progress poll's pace.
          await this.wake.changed(END_POLL_MS);
        }
      })(),
      JOB_END_TIMEOUT_MS,
      () => new FerryError('ERR_FERRY_TIMEOUT', `the disk mirrors did not end within ${JOB_END_TIMEOUT_MS / 1000} s`),
    );
  }

  private async detach(): Promise<void> {
    for (const m of this.mirrors) {
      if (m.attached) await this.qmp.execute('blockdev-del', { 'node-name': targetNode(m.index) }).catch(() => {});
      m.attached = false;
      m.server?.close();
      m.server = null;
    }
    this.unsubscribe?.();
    this.unsubscribe = null;
    await fs.rm(path.join(this.dir, NBD_DIR), { recursive: true, force: true });
  }

  /** A migration that failed: every mirror still running cancelled at once, the NBD clients gone; the disks are the source's alone. */
  async abandon(): Promise<void> {
    if (!this.any) return;
    for (const m of this.mirrors) {
      if (m.ended || !m.attached) continue;
      await this.qmp.execute('block-job-cancel', { device: jobId(m.index), force: true }).catch(() => {
        m.ended = true; // no such job (it never started, or it ended already)
      });
    }
    await this.jobsEnded().catch(() => {});
    await this.detach();
  }

  figures(): DiskFigures {
    const mirrored = new Set(this.mirrors.map((m) => m.index));
    return {
      bytes: this.mirrors.reduce((s, m) => s + m.offset, 0),
      mirroredBytes: this.mirrors.reduce((s, m) => s + m.disk.bytes, 0),
      sharedBytes: this.disks.filter((d) => d.shared).reduce((s, d) => s + d.bytes, 0),
      disks: this.disks.map((d, index) => ({
        index,
        bytes: d.bytes,
        shared: d.shared !== undefined,
        mirroredBytes: mirrored.has(index) ? (this.mirrors.find((m) => m.index === index)?.offset ?? 0) : 0,
      })),
      readyMs: this.readyMs,
    };
  }
}
