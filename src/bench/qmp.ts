/**
 * A small QMP client (QEMU's JSON machine protocol) over a unix socket: the greeting, capability
 * negotiation, then one command at a time answered in order. Asynchronous events (lines with an
 * "event" key) are kept for the caller. Enough to drive and time QEMU's own migration.
 */
import net from 'node:net';
import { FerryError } from '../errors.js';
import { LineReader } from '../common/json-lines.js';

const MAX_LINE_BYTES = 1 << 20;

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

export interface QmpEvent {
  event: string;
  data?: unknown;
}

export class QmpClient {
  readonly events: QmpEvent[] = [];
  private readonly pending: Pending[] = [];
  private greeted: Pending | null = null;
  private closedError: FerryError | null = null;

  private constructor(private readonly socket: net.Socket) {
    const lines = new LineReader({ maxLineBytes: MAX_LINE_BYTES, maxSecretBytes: 0 });
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const r of lines.feed(chunk)) {
          if (r.error) throw r.error;
          this.onMessage(r.message);
        }
      } catch (err) {
        this.fail(new FerryError('ERR_FERRY_INPUT', `QMP: bad message from QEMU: ${(err as Error).message}`));
      }
    });
    socket.on('error', (err) => this.fail(new FerryError('ERR_FERRY_NETWORK', `QMP: ${err.message}`)));
    socket.on('close', () => this.fail(new FerryError('ERR_FERRY_NETWORK', 'QMP: QEMU closed the connection')));
  }

  /** Connects, reads the greeting and leaves negotiation mode (`qmp_capabilities`). */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const socket = net.connect(path);
    const client = new QmpClient(socket);
    const timer = setTimeout(() => client.fail(new FerryError('ERR_FERRY_TIMEOUT', `QMP: no greeting from ${path} within ${timeoutMs} ms`)), timeoutMs);
    try {
      await new Promise((resolve, reject) => (client.greeted = { resolve, reject }));
      await client.execute('qmp_capabilities');
      return client;
    } catch (err) {
      socket.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs one command; resolves with its `return`, rejects with QEMU's error class and description. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onMessage(message: Record<string, unknown>): void {
    if ('QMP' in message) {
      this.greeted?.resolve(message);
      this.greeted = null;
    } else if ('event' in message) {
      this.events.push(message as unknown as QmpEvent);
    } else if ('return' in message) {
      this.pending.shift()?.resolve(message.return);
    } else if ('error' in message) {
      const e = message.error as { class?: string; desc?: string };
      this.pending.shift()?.reject(new FerryError('ERR_FERRY_REFUSED', `QMP: ${e.class ?? 'error'}: ${e.desc ?? ''}`));
    }
  }

  private fail(err: FerryError): void {
    if (this.closedError) return;
    this.closedError = err;
    this.greeted?.reject(err);
    for (const p of this.pending.splice(0)) p.reject(err);
    this.socket.destroy();
  }
}
