/**
 * The agent's side of the guest control protocol: one connection to GUESTDIR/control.sock, any
 * number of requests in flight, events delivered to the request that asked for them.
 */
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { FerryError } from '../errors.js';
import type { MigrationEvent, OutgoingSpec } from '../migration/types.js';
import type { MigrationInfo } from './synthetic/migration-tracker.js';
import { CONTROL_SOCKET } from './files.js';
import { GUEST_LINES, PROTOCOL_VERSION, errorFromReply } from './protocol.js';
import { LineReader, encodeLine, writeWithSecret } from '../json-lines.js';
import type { GuestStatus } from './types.js';

export type { MigrationInfo, MigrationPhase } from './synthetic/migration-tracker.js';

export interface GuestStatusReport extends GuestStatus {
  /** The workload finished its one-time setup (idle: memory filled; kv: keys loaded). */
  workloadReady: boolean;
  /** The current or last migration of this guest process, if any. */
  migration: MigrationInfo | null;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  onEvent?: (event: never) => void;
  timer?: NodeJS.Timeout;
}

/** Ordinary requests answer quickly; a guest that does not is stuck. */
const REQUEST_TIMEOUT_MS = 30_000;

export class GuestClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly closedPromise: Promise<void>;
  private closedError: FerryError | null = null;

  protected constructor(
    readonly dir: string,
    private readonly socket: Socket,
    /** The guest process's pid, as it said in hello. */
    readonly pid: number,
  ) {
    const reader = new LineReader(GUEST_LINES);
    socket.on('data', (chunk: Buffer) => {
      let received;
      try {
        received = reader.feed(chunk);
      } catch (err) {
        socket.destroy(err as Error);
        return;
      }
      for (const r of received) {
        if (r.error) {
          socket.destroy(r.error);
          return;
        }
        this.onReply(r.message);
      }
    });
    socket.on('error', () => {});
    this.closedPromise = new Promise((resolve) => {
      socket.on('close', () => {
        this.closedError = new FerryError('ERR_FERRY_NETWORK', `the control connection to guest ${dir} closed`);
        for (const p of this.pending.values()) {
          clearTimeout(p.timer);
          p.reject(this.closedError);
        }
        this.pending.clear();
        resolve();
      });
    });
  }

  /** Connects to the guest process in `dir`; rejects when nothing answers there. */
  static async connect(dir: string): Promise<GuestClient> {
    const socket = await openSocket(join(dir, CONTROL_SOCKET));
    const probe = new GuestClient(dir, socket, 0);
    const hello = (await probe.request('hello')) as { protocol: number; pid: number };
    if (hello.protocol !== PROTOCOL_VERSION) {
      probe.close();
      throw new FerryError('ERR_FERRY_REFUSED', `guest process speaks control protocol ${hello.protocol}, this agent ${PROTOCOL_VERSION}`);
    }
    (probe as { pid: number }).pid = hello.pid;
    return probe;
  }

  private onReply(message: Record<string, unknown>): void {
    const id = message.id;
    if (typeof id !== 'number') return;
    const p = this.pending.get(id);
    if (!p) return;
    if ('event' in message) {
      p.onEvent?.(message.event as never);
      return;
    }
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (message.ok === true) p.resolve(message.result);
    else p.reject(errorFromReply(message.error));
  }

  /**
   * Sends one request. `secret` travels as raw bytes after the line (never inside JSON); the
   * caller keeps and wipes its own copy. `timeoutMs: 0` waits as long as it takes.
   */
  request(method: string, params: object = {}, options: { secret?: Uint8Array; onEvent?: (event: never) => void; timeoutMs?: number } = {}): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const p: Pending = { resolve, reject, onEvent: options.onEvent };
      const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
      if (timeoutMs > 0) {
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new FerryError('ERR_FERRY_TIMEOUT', `guest ${this.dir} did not answer ${method} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.pending.set(id, p);
      if (options.secret) writeWithSecret(this.socket, { id, method, params }, options.secret);
      else this.socket.write(encodeLine({ id, method, params }));
    });
  }

  async status(): Promise<GuestStatusReport> {
    return (await this.request('status')) as GuestStatusReport;
  }

  /** Returns once the workload has stopped writing. */
  async pause(): Promise<GuestStatus> {
    return (await this.request('pause')) as GuestStatus;
  }

  async resume(): Promise<GuestStatus> {
    return (await this.request('resume')) as GuestStatus;
  }

  /** Holds the workload back `percent` (0-99) of the time. Refused while a migration runs. */
  async throttle(percent: number): Promise<GuestStatus> {
    return (await this.request('throttle', { percent })) as GuestStatus;
  }

  /** SHA-256 over memory then disk (docs/migration.md); meaningful while paused. */
  async digest(): Promise<string> {
    const r = (await this.request('digest', {}, { timeoutMs: 0 })) as { digest: string };
    return r.digest;
  }

  /** Stops the guest process (memory is lost; the disk image stays) and waits until it is gone. */
  async stop(): Promise<void> {
    await this.request('stop');
    await this.closedPromise;
  }

  /** Stops the guest process and removes its directory. */
  async destroy(): Promise<void> {
    await this.request('destroy');
    await this.closedPromise;
  }

  /**
   * Migrates this guest out. The key and nonce go to the guest process as raw bytes over the
   * control socket before this returns its promise, so the caller may wipe its own copies at once. Resolves with the migration's info once it
   * has settled: phase 'committed' (the agent then stops the guest), 'aborted' (the guest runs
   * here), or 'in-doubt' (paused; resolve with resumeAfterAbort() or finish()). Rejects, the guest
   * untouched, when the request is bad or no channel could be opened.
   */
  async migrateOut(spec: OutgoingSpec, onEvent?: (event: MigrationEvent) => void): Promise<MigrationInfo> {
    const { key, nonce, ...params } = spec;
    const secret = Buffer.concat([key, nonce]);
    let reply: Promise<unknown>;
    try {
      // request() writes the secret before it returns: no copy of it outlives this call.
      reply = this.request('migrate-out', params, { secret, onEvent: onEvent as (e: never) => void, timeoutMs: 0 });
    } finally {
      secret.fill(0);
    }
    return (await reply) as MigrationInfo;
  }

  /**
   * Cancels outgoing migration `migrationId` before its switch-over; refused (ERR_FERRY_REFUSED)
   * once the guest is paused for the hand-off. The migrateOut call then ends 'aborted'.
   */
  async cancelMigration(migrationId: string): Promise<void> {
    await this.request('cancel-migration', { migrationId });
  }

  /** The current or last migration, or null. */
  async migration(): Promise<MigrationInfo | null> {
    return (await this.request('migration')) as MigrationInfo | null;
  }

  /**
   * Follows the migration in progress (e.g. after re-attaching) until it settles: for a source,
   * committed / aborted / in-doubt; for a destination, ready-to-commit or aborted.
   */
  async awaitMigration(onEvent?: (event: MigrationEvent) => void): Promise<MigrationInfo> {
    return (await this.request('await-migration', {}, { onEvent: onEvent as (e: never) => void, timeoutMs: 0 })) as MigrationInfo;
  }

  /** Destination, ready-to-commit, after the agent recorded ownership durably: run the guest here. */
  async commit(): Promise<MigrationInfo> {
    return (await this.request('commit')) as MigrationInfo;
  }

  /** Destination, ready-to-commit: do not run it; the incoming guest process exits. */
  async abort(): Promise<MigrationInfo> {
    return (await this.request('abort')) as MigrationInfo;
  }

  /** Source in doubt, once the destination's agent said "not committed": run the guest here again. */
  async resumeAfterAbort(): Promise<GuestStatus> {
    return (await this.request('resume-after-abort')) as GuestStatus;
  }

  /** Source migrated or in doubt, once the destination's agent said "committed": this copy exits. */
  async finish(): Promise<void> {
    await this.request('finish');
    await this.closedPromise;
  }

  /** Closes this control connection; the guest process carries on. */
  close(): void {
    this.socket.destroy();
  }

  /** True once the control connection has closed (requests still pending were rejected for it). */
  get lost(): boolean {
    return this.closedError !== null;
  }

  get closed(): Promise<void> {
    return this.closedPromise;
  }
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}
