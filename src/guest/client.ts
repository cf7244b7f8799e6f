/**
 * The agent's side of the guest control protocol: one connection to GUESTDIR/control.sock, any
 * number of requests in flight, events delivered to the request that asked for them.
 */
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { FerryError } from '../errors.js';
import { RpcClient } from '../common/rpc.js';
import { waitProcessGone } from '../common/process.js';
import type { MigrationEvent, OutgoingSpec } from '../migration/types.js';
import type { MigrationInfo } from './migration-tracker.js';
import type { ConsoleChunk } from './console.js';
import { CONTROL_SOCKET } from './files.js';
import {
  MAX_REPLY_BYTES,
  PROTOCOL_VERSION,
  type CancelReason,
  type GuestEvent,
  type GuestMethod,
  type GuestParams,
  type GuestResult,
  type GuestStatusReport,
} from './protocol.js';
import type { GuestStatus } from './types.js';

export type { MigrationInfo, MigrationPhase } from './migration-tracker.js';
export type { GuestStatusReport } from './protocol.js';

/** Ordinary requests answer quickly; a guest that does not is stuck. */
const REQUEST_TIMEOUT_MS = 30_000;
/** After its last reply a guest process ends what it ran (a QEMU) and exits; longer is a fault. */
const EXIT_TIMEOUT_MS = 15_000;

export interface RequestOptions<E> {
  /** Raw bytes after the request line (keyed methods); the caller keeps and wipes its own copy. */
  secret?: Uint8Array;
  onEvent?: (event: E) => void;
  /** 0: wait as long as it takes. */
  timeoutMs?: number;
}

export class GuestClient {
  private readonly rpc: RpcClient;

  protected constructor(
    readonly dir: string,
    private readonly socket: Socket,
    /** The guest process's pid, as it said in hello. */
    readonly pid: number,
  ) {
    socket.on('error', () => {});
    this.rpc = new RpcClient(socket, {
      maxReplyBytes: MAX_REPLY_BYTES,
      peer: `guest ${dir}`,
      defaultTimeoutMs: REQUEST_TIMEOUT_MS,
      closedError: () => new FerryError('ERR_FERRY_NETWORK', `the control connection to guest ${dir} closed`),
    });
  }

  /** Connects to the guest process in `dir`; rejects when nothing answers there. */
  static async connect(dir: string): Promise<GuestClient> {
    const socket = await openSocket(join(dir, CONTROL_SOCKET));
    const probe = new GuestClient(dir, socket, 0);
    const hello = await probe.request('hello', {});
    if (hello.protocol !== PROTOCOL_VERSION) {
      probe.close();
      throw new FerryError('ERR_FERRY_REFUSED', `guest process speaks control protocol ${hello.protocol}, this agent ${PROTOCOL_VERSION}`);
    }
    (probe as { pid: number }).pid = hello.pid;
    return probe;
  }

  /**
   * Sends one request. `secret` travels as raw bytes after the line (never inside JSON); the
   * caller keeps and wipes its own copy.
   */
  request<M extends GuestMethod>(method: M, params: GuestParams<M>, options: RequestOptions<GuestEvent<M>> = {}): Promise<GuestResult<M>> {
    const { timeoutMs, onEvent, secret } = options;
    return this.rpc.call(method, params, {
      ...(secret ? { secret } : {}),
      ...(onEvent ? { onEvent: onEvent as (e: unknown) => void } : {}),
      ...(timeoutMs !== undefined ? { timeoutMs: timeoutMs === 0 ? null : timeoutMs } : {}),
    }) as Promise<GuestResult<M>>;
  }

  async status(): Promise<GuestStatusReport> {
    return this.request('status', {});
  }

  /** Returns once the workload has stopped writing. */
  async pause(): Promise<GuestStatus> {
    return this.request('pause', {});
  }

  async resume(): Promise<GuestStatus> {
    return this.request('resume', {});
  }

  /** Holds the workload back `percent` (0-99) of the time. Refused while a migration runs. */
  async throttle(percent: number): Promise<GuestStatus> {
    return this.request('throttle', { percent });
  }

  /** One chunk of the guest's serial console log from byte `offset` (refused for a guest without one). */
  async console(offset: number): Promise<ConsoleChunk> {
    return this.request('console', { offset });
  }

  /** SHA-256 over memory then disk (docs/migration.md); meaningful while paused. */
  async digest(): Promise<string> {
    return (await this.request('digest', {}, { timeoutMs: 0 })).digest;
  }

  /** Stops the guest process (memory is lost; the disk image stays) and waits until it is gone. */
  async stop(): Promise<void> {
    await this.request('stop', {});
    await this.gone();
  }

  /** Stops the guest process and removes its directory. */
  async destroy(): Promise<void> {
    await this.request('destroy', {});
    await this.gone();
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
    let reply: Promise<MigrationInfo>;
    try {
      // request() writes the secret before it returns: no copy of it outlives this call.
      reply = this.request('migrate-out', params, { secret, ...(onEvent ? { onEvent } : {}), timeoutMs: 0 });
    } finally {
      secret.fill(0);
    }
    return reply;
  }

  /**
   * Cancels outgoing migration `migrationId` before its switch-over; refused (ERR_FERRY_REFUSED)
   * once the guest is paused for the hand-off. The migrateOut call then ends 'aborted'.
   */
  async cancelMigration(migrationId: string, reason?: CancelReason): Promise<void> {
    await this.request('cancel-migration', { migrationId, ...(reason ? { reason } : {}) });
  }

  /** The current or last migration, or null. */
  async migration(): Promise<MigrationInfo | null> {
    return this.request('migration', {});
  }

  /**
   * Follows the migration in progress (e.g. after re-attaching) until it settles: for a source,
   * committed / aborted / in-doubt; for a destination, ready-to-commit or aborted.
   */
  async awaitMigration(onEvent?: (event: MigrationEvent) => void): Promise<MigrationInfo> {
    return this.request('await-migration', {}, { ...(onEvent ? { onEvent } : {}), timeoutMs: 0 });
  }

  /** Destination, ready-to-commit, after the agent recorded ownership durably: run the guest here. */
  async commit(): Promise<MigrationInfo> {
    return this.request('commit', {});
  }

  /** Destination, ready-to-commit: do not run it; the incoming guest process exits. */
  async abort(): Promise<MigrationInfo> {
    return this.request('abort', {});
  }

  /** Source in doubt, once the destination's agent said "not committed": run the guest here again. */
  async resumeAfterAbort(): Promise<GuestStatus> {
    return this.request('resume-after-abort', {});
  }

  /** Source migrated or in doubt, once the destination's agent said "committed": this copy exits. */
  async finish(): Promise<void> {
    await this.request('finish', {});
    await this.gone();
  }

  /** Waits, after a reply that ends the guest process, until the connection closed and the process exited. */
  private async gone(): Promise<void> {
    await this.rpc.closed;
    if (this.pid > 0 && !(await waitProcessGone(this.pid, EXIT_TIMEOUT_MS))) {
      throw new FerryError(
        'ERR_FERRY_TIMEOUT',
        `guest process ${this.pid} (${this.dir}) still runs ${EXIT_TIMEOUT_MS} ms after it said it would exit`,
      );
    }
  }

  /** Closes this control connection; the guest process carries on. */
  close(): void {
    this.socket.destroy();
  }

  /** True once the control connection has closed (requests still pending were rejected for it). */
  get lost(): boolean {
    return this.rpc.error !== null;
  }

  get closed(): Promise<void> {
    return this.rpc.closed;
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
