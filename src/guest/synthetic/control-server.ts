/**
 * The guest process's control socket: JSON lines (src/guest/protocol.ts) dispatched through a
 * table of handlers; one wrapper turns whatever a handler throws into `{ok: false, error}`. A
 * connection that sends a line too long or not JSON gets one error and is closed.
 */
import { chmodSync, existsSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { FerryError, toFerryError } from '../../errors.js';
import { GUEST_LINES, type Reply } from '../protocol.js';
import { LineReader, encodeLine, type Received } from '../../json-lines.js';

export interface HandlerContext {
  /** The raw secret bytes that followed the request, if any. The handler wipes them. */
  secret: Buffer | null;
  /** Sends an event line for this request (long calls: migrations). */
  emit(event: unknown): void;
  /** Resolves when this connection closes (a waiting handler may stop caring). */
  closed: Promise<void>;
}

export type Handler = (params: Record<string, unknown>, ctx: HandlerContext) => Promise<unknown> | unknown;

/** Is something already answering on `path`? */
function answering(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function listenControl(path: string, handlers: Record<string, Handler>): Promise<Server> {
  if (existsSync(path)) {
    if (await answering(path)) throw new FerryError('ERR_FERRY_REFUSED', `another guest process answers on ${path}`);
    unlinkSync(path);
  }
  const server = createServer((socket) => serve(socket, handlers));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return server;
}

function serve(socket: Socket, handlers: Record<string, Handler>): void {
  const reader = new LineReader(GUEST_LINES);
  let closedResolve!: () => void;
  const closed = new Promise<void>((r) => (closedResolve = r));
  const send = (reply: Reply): void => {
    if (!socket.destroyed && socket.writable) socket.write(encodeLine(reply));
  };
  socket.on('close', () => {
    reader.wipe();
    closedResolve();
  });
  socket.on('error', () => {});
  socket.on('data', (chunk: Buffer) => {
    let received: Received[];
    try {
      received = reader.feed(chunk);
    } catch (err) {
      received = [{ error: toFerryError(err, 'ERR_FERRY_INPUT') }];
    }
    const bad = received.find((r) => r.error);
    if (bad) {
      // The agent never sends a bad line: whatever sent this is not served further.
      for (const r of received) r.secret?.fill(0);
      reader.wipe();
      send({ id: null, ok: false, error: bad.error!.toJSON() });
      socket.end();
      socket.destroySoon?.();
      return;
    }
    for (const r of received) void dispatch(r.message!, r.secret ?? null);
  });

  async function dispatch(message: Record<string, unknown>, secret: Buffer | null): Promise<void> {
    const id = message.id;
    if (typeof id !== 'number' || !Number.isSafeInteger(id)) {
      secret?.fill(0);
      send({ id: null, ok: false, error: { code: 'ERR_FERRY_INPUT', message: 'request id must be an integer' } });
      return;
    }
    try {
      const method = message.method;
      const handler = typeof method === 'string' && Object.prototype.hasOwnProperty.call(handlers, method) ? handlers[method] : undefined;
      if (!handler) throw new FerryError('ERR_FERRY_INPUT', `unknown method ${JSON.stringify(method)}`);
      const params = message.params ?? {};
      if (params === null || typeof params !== 'object' || Array.isArray(params)) throw new FerryError('ERR_FERRY_INPUT', 'params must be an object');
      const result = await handler(params as Record<string, unknown>, { secret, emit: (event) => send({ id, event }), closed });
      send({ id, ok: true, result: result ?? null });
    } catch (err) {
      send({ id, ok: false, error: toFerryError(err).toJSON() });
    } finally {
      secret?.fill(0);
    }
  }
}
