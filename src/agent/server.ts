/**
 * The agent's control API server: TLS 1.3 with `requestCert` and `rejectUnauthorized` against the
 * cluster CA, so a client without a certificate of the cluster CA is dropped during the handshake,
 * before any byte of its reaches a handler. Requests are JSON lines (protocol.ts), checked, then
 * dispatched through a table of handlers; one wrapper turns whatever a handler throws into
 * `{ok: false, error: {code, message}}`. A request's secret trailer (a migration's key) is zeroed
 * here on every path: refused before its handler ran, or once the handler has settled.
 */
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { FerryError, toFerryError } from '../errors.js';
import type { Logger } from './log.js';
import { encodeLine, LineReader, type Received } from '../json-lines.js';
import {
  checkRequest, DEFAULT_REQUEST_TIMEOUT_MS, HELLO_TIMEOUT_MS, HOST_NAME_PATTERN, isMethod, keyOf, MAX_IN_FLIGHT,
  MIN_PROTOCOL_VERSION, PARAMS, PROTOCOL_VERSION, REQUEST_LINES,
  type Event, type HelloResult, type KeyOf, type Method, type Params, type Peer, type Reply, type Result, type Role,
} from './protocol.js';
import { COORDINATOR_CN } from '../coordinator/pki.js';
import { formatAddress, type Address } from '../coordinator/address.js';

export interface HandlerContext<M extends Method> {
  peer: Peer;
  /** Aborted when the request times out, the client goes away, or the agent stops. */
  signal: AbortSignal;
  /** Sends one progress event of a streaming call. */
  emit(event: Event<M>): void;
  log: Logger;
  /** Keyed methods: the migration's key and nonce, zeroed by the server once run() settles. */
  key: KeyOf<M>;
}

export interface Handler<M extends Method> {
  /** Who may call it. Hosts (agent-to-agent) get only what they need. */
  roles: readonly Role[];
  /** Time limit in ms; null for calls that stream until their own limits end them (migrations). */
  timeoutMs?: number | null;
  run(params: Params<M>, ctx: HandlerContext<M>): Promise<Result<M>>;
}

export type HandlerTable = { [M in Exclude<Method, 'hello'>]?: Handler<M> };

export interface TlsCredentials {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface ControlServerOptions {
  credentials: TlsCredentials;
  handlers: HandlerTable;
  hello: Omit<HelloResult, 'protocol' | 'minProtocol'>;
  log: Logger;
}

function peerOf(socket: tls.TLSSocket): Peer | null {
  const cn = socket.getPeerCertificate()?.subject?.CN;
  const name = Array.isArray(cn) ? undefined : cn;
  if (name === COORDINATOR_CN) return { role: 'coordinator', name };
  if (name && HOST_NAME_PATTERN.test(name)) return { role: 'host', name };
  return null;
}

class Connection {
  private readonly reader = new LineReader(REQUEST_LINES);
  private readonly inFlight = new Map<number, AbortController>();
  private helloDone = false;
  private readonly helloTimer: NodeJS.Timeout;

  constructor(
    private readonly socket: tls.TLSSocket,
    private readonly peer: Peer,
    private readonly options: ControlServerOptions,
    private readonly log: Logger,
  ) {
    this.helloTimer = setTimeout(() => this.fail(null, new FerryError('ERR_FERRY_TIMEOUT', 'no hello in time')), HELLO_TIMEOUT_MS);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('close', () => {
      this.reader.wipe();
      this.closed();
    });
    socket.on('error', (err) => this.log.debug('control connection error', { err }));
  }

  private send(reply: Reply): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(encodeLine(reply));
  }

  private sendError(id: number | null, err: unknown): void {
    const e = toFerryError(err);
    this.send({ id, ok: false, error: e.toJSON() });
  }

  /** Answers with an error and closes: the connection cannot be trusted to continue. */
  private fail(id: number | null, err: unknown): void {
    this.sendError(id, err);
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private onData(chunk: Buffer): void {
    let received: Received[];
    try {
      received = this.reader.feed(chunk);
    } catch (err) {
      // An oversized line or an impossible trailer size: where the next request starts is unknown.
      this.log.warn('request refused', { reason: toFerryError(err).message });
      this.fail(null, err);
      return;
    }
    for (const r of received) {
      if (this.socket.destroyed) r.secret?.fill(0);
      else if (r.error) this.refuseMalformed(r.error);
      else this.onRequest(r.message, r.secret);
    }
  }

  private refuseMalformed(err: unknown): void {
    this.log.warn('request refused', { reason: 'malformed' });
    this.sendError(null, err);
  }

  /** Takes a request and its secret trailer, if any: either dispatches both or zeroes the secret. */
  private onRequest(message: Record<string, unknown>, secret: Buffer | null): void {
    let dispatched = false;
    try {
      let request;
      try {
        request = checkRequest(message, 'request');
      } catch (err) {
        this.refuseMalformed(err);
        return;
      }
      const { id, method } = request;
      if (!this.helloDone && method !== 'hello') {
        this.fail(id, new FerryError('ERR_FERRY_REFUSED', 'the first request must be hello'));
        return;
      }
      if (this.inFlight.has(id)) {
        this.sendError(id, new FerryError('ERR_FERRY_INPUT', `request id ${id} is already in flight`));
        return;
      }
      if (this.inFlight.size >= MAX_IN_FLIGHT) {
        this.sendError(id, new FerryError('ERR_FERRY_REFUSED', `more than ${MAX_IN_FLIGHT} requests in flight`));
        return;
      }
      if (method === 'hello') {
        this.hello(id, request.params, secret);
        return;
      }
      void this.dispatch(id, method, request.params, secret);
      dispatched = true;
    } finally {
      if (!dispatched) secret?.fill(0);
    }
  }

  private hello(id: number, raw: unknown, secret: Buffer | null): void {
    try {
      const params = PARAMS.hello(raw, 'params');
      keyOf('hello', secret);
      if (params.protocol < MIN_PROTOCOL_VERSION) {
        throw new FerryError('ERR_FERRY_REFUSED', `protocol ${params.protocol} is older than this agent accepts (${MIN_PROTOCOL_VERSION}): upgrade ferry`);
      }
      clearTimeout(this.helloTimer);
      this.helloDone = true;
      this.log.info('client connected', { client: params.client, protocol: params.protocol });
      this.send({ id, ok: true, result: { ...this.options.hello, protocol: PROTOCOL_VERSION, minProtocol: MIN_PROTOCOL_VERSION } });
    } catch (err) {
      this.fail(id, err);
    }
  }

  /** Runs one request; `secret` is zeroed before this returns, or when its handler settles. */
  private async dispatch(id: number, method: string, raw: unknown, secret: Buffer | null): Promise<void> {
    const controller = new AbortController();
    this.inFlight.set(id, controller);
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    let running: Promise<unknown> | null = null;
    try {
      const handler = isMethod(method) && method !== 'hello' ? (this.options.handlers[method] as Handler<Method> | undefined) : undefined;
      if (!handler) throw new FerryError('ERR_FERRY_INPUT', `unknown method "${method.slice(0, 100)}"`);
      if (!handler.roles.includes(this.peer.role)) {
        throw new FerryError('ERR_FERRY_REFUSED', `${method} is not open to ${this.peer.role} certificates`);
      }
      const params = PARAMS[method as Method](raw, 'params');
      const key = keyOf(method as Method, secret);
      const limit = handler.timeoutMs === undefined ? DEFAULT_REQUEST_TIMEOUT_MS : handler.timeoutMs;
      const timedOut = new Promise<never>((_, reject) => {
        if (limit === null) return;
        timer = setTimeout(() => {
          const err = new FerryError('ERR_FERRY_TIMEOUT', `${method} took longer than ${limit} ms`);
          controller.abort(err);
          reject(err);
        }, limit);
      });
      const ctx: HandlerContext<Method> = {
        peer: this.peer,
        signal: controller.signal,
        emit: (event) => {
          if (!controller.signal.aborted) this.send({ id, event });
        },
        log: this.log,
        key,
      };
      running = handler.run(params as never, ctx);
      // Not at the time limit: a handler still running may still be handing the key on.
      const wipe = () => secret?.fill(0);
      running.then(wipe, wipe);
      const result = await Promise.race([running, timedOut]);
      this.send({ id, ok: true, result });
      this.log.info('request', { id, method, ms: Date.now() - started, ok: true });
    } catch (err) {
      const e = toFerryError(err);
      this.log.info('request', { id, method: method.slice(0, 100), ms: Date.now() - started, ok: false, code: e.code, error: e.message });
      this.sendError(id, e);
    } finally {
      if (!running) secret?.fill(0);
      clearTimeout(timer);
      this.inFlight.delete(id);
    }
  }

  private closed(): void {
    clearTimeout(this.helloTimer);
    for (const c of this.inFlight.values()) c.abort(new FerryError('ERR_FERRY_NETWORK', 'the client went away'));
    this.inFlight.clear();
  }

  /** Ends the connection (agent stopping); handlers in flight are aborted. */
  shutdown(): void {
    this.closed();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }
}

export class ControlServer {
  private readonly server: tls.Server;
  private readonly connections = new Set<Connection>();

  constructor(private readonly options: ControlServerOptions) {
    const { ca, cert, key } = options.credentials;
    this.server = tls.createServer({ ca, cert, key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' });
    this.server.on('secureConnection', (socket) => this.accept(socket));
    this.server.on('tlsClientError', (err, socket) => {
      // Refused during the handshake: a foreign CA, no certificate, or not TLS at all.
      options.log.warn('control connection refused', { remote: socket.remoteAddress, reason: (err as NodeJS.ErrnoException).code ?? err.message });
    });
  }

  private accept(socket: tls.TLSSocket): void {
    const peer = socket.authorized ? peerOf(socket) : null;
    if (!peer) {
      // Belt and braces: rejectUnauthorized already dropped unverified peers.
      this.options.log.warn('control connection refused', { remote: socket.remoteAddress, reason: 'certificate is not a coordinator or host of this cluster' });
      socket.destroy();
      return;
    }
    const log = this.options.log.child({ peer: peer.name, remote: `${socket.remoteAddress}:${socket.remotePort}` });
    const connection = new Connection(socket, peer, this.options, log);
    this.connections.add(connection);
    socket.on('close', () => this.connections.delete(connection));
  }

  /** Listens on `address`; resolves with the address actually bound (port 0 picks one). */
  listen(address: Address): Promise<string> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        reject(new FerryError('ERR_FERRY_NETWORK', `cannot listen on ${formatAddress(address)}: ${err.code ?? err.message}`));
      };
      this.server.once('error', onError);
      this.server.listen(address.port, address.host, () => {
        this.server.off('error', onError);
        const a = this.server.address() as AddressInfo;
        resolve(formatAddress({ host: a.address, port: a.port }));
      });
    });
  }

  /** Stops accepting, ends every connection, and resolves once the listener is closed. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const c of this.connections) c.shutdown();
    });
  }
}
