/**
 * The guest process's control socket, for any driver: a unix socket (mode 0600) that serves the
 * method table of protocol.ts with the driver's handlers. Each request's params pass their
 * method's check before its handler runs; whatever a handler throws becomes `{ok: false, error}`.
 * The agent never sends a bad line, so whatever sends one gets one error and is not served further.
 */
import { chmodSync, existsSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { FerryError } from '../errors.js';
import { RpcConnection } from '../common/rpc.js';
import {
  GUEST_LINES,
  GUEST_PARAMS,
  isGuestMethod,
  KEYED_GUEST_METHODS,
  type GuestEvent,
  type GuestMethod,
  type GuestParams,
  type GuestResult,
} from './protocol.js';

export interface GuestCallContext<E> {
  /** Keyed methods: the raw trailer, wiped once the handler settles (protocol.ts keyOfTrailer copies it). */
  secret: Buffer | null;
  /** Sends an event line for this call (long calls: migrations). */
  emit(event: E): void;
  /** Resolves when this control connection closes (a waiting handler may stop caring). */
  closed: Promise<void>;
}

export type GuestHandlers = {
  [M in GuestMethod]: (params: GuestParams<M>, ctx: GuestCallContext<GuestEvent<M>>) => Promise<GuestResult<M>> | GuestResult<M>;
};

/** Requests in flight on one control connection; the agent has a handful at most. */
const MAX_IN_FLIGHT = 64;

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

/**
 * Refuses (ERR_FERRY_REFUSED) when another guest process answers on `path`, and removes the
 * socket a dead one left there: a guest process checks this before it touches its guest's files.
 */
export async function claimControlPath(path: string): Promise<void> {
  if (!existsSync(path)) return;
  if (await answering(path)) throw new FerryError('ERR_FERRY_REFUSED', `another guest process answers on ${path}`);
  unlinkSync(path);
}

export async function listenControl(path: string, handlers: GuestHandlers): Promise<Server> {
  await claimControlPath(path);
  const server = createServer((socket) => {
    new RpcConnection(socket, {
      limits: GUEST_LINES,
      maxInFlight: MAX_IN_FLIGHT,
      defaultTimeoutMs: null,
      malformed: 'close',
      handler: (method) => {
        if (!isGuestMethod(method)) throw new FerryError('ERR_FERRY_INPUT', `unknown method ${JSON.stringify(method.slice(0, 100))}`);
        const run = handlers[method] as (params: unknown, ctx: GuestCallContext<unknown>) => unknown;
        return {
          run: (raw, ctx) => {
            if (ctx.secret && !KEYED_GUEST_METHODS.has(method))
              throw new FerryError('ERR_FERRY_INPUT', `${method} takes no secret trailer`);
            const params = GUEST_PARAMS[method](raw, method);
            return run(params, { secret: ctx.secret, emit: ctx.emit, closed: ctx.closed });
          },
        };
      },
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return server;
}
