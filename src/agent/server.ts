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
import { FerryError } from '../errors.js';
import type { Logger } from '../common/log.js';
import { RpcConnection, type RpcCallContext, type RpcHandler } from '../common/rpc.js';
import {
  DEFAULT_REQUEST_TIMEOUT_MS,
  HELLO_TIMEOUT_MS,
  isMethod,
  keyOf,
  MAX_IN_FLIGHT,
  MIN_PROTOCOL_VERSION,
  PARAMS,
  PROTOCOL_VERSION,
  REQUEST_LINES,
  type Event,
  type HelloResult,
  type KeyOf,
  type Method,
  type Params,
  type Peer,
  type Result,
  type Role,
} from '../control/protocol.js';
import { peerOf, TLS_MIN_VERSION, type TlsCredentials } from '../control/tls.js';
import { formatAddress, type Address } from '../common/address.js';

export interface HandlerContext<M extends Method> {
  peer: Peer;
  /** Aborted when the request times out, the client goes away, or the agent stops. */
  signal: AbortSignal;
  /** Sends one progress event of a streaming call. */
  emit(event: Event<M>): void;
  /** Resolves once the client has taken what was sent so far (or went away): a stream waits on it between events. */
  drained(): Promise<void>;
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

export interface ControlServerOptions {
  credentials: TlsCredentials;
  handlers: HandlerTable;
  hello: Omit<HelloResult, 'protocol' | 'minProtocol'>;
  log: Logger;
}

/** One client's connection: hello first, then its certificate's methods (src/common/rpc.ts does the rest). */
class Connection {
  private helloDone = false;
  private readonly helloTimer: NodeJS.Timeout;
  private readonly rpc: RpcConnection;

  constructor(
    socket: tls.TLSSocket,
    private readonly peer: Peer,
    private readonly options: ControlServerOptions,
    private readonly log: Logger,
  ) {
    socket.on('error', (err) => this.log.debug('control connection error', { err }));
    this.rpc = new RpcConnection(socket, {
      limits: REQUEST_LINES,
      maxInFlight: MAX_IN_FLIGHT,
      defaultTimeoutMs: DEFAULT_REQUEST_TIMEOUT_MS,
      malformed: 'answer',
      handler: (method) => this.handler(method),
      onRefused: (reason) => this.log.warn('request refused', { reason }),
      onAnswered: ({ id, method, ms, error }) => {
        if (method === 'hello') return;
        const name = method.slice(0, 100);
        if (error) this.log.info('request', { id, method: name, ms, ok: false, code: error.code, error: error.message });
        else this.log.info('request', { id, method: name, ms, ok: true });
      },
    });
    this.helloTimer = setTimeout(() => this.rpc.fail(null, new FerryError('ERR_FERRY_TIMEOUT', 'no hello in time')), HELLO_TIMEOUT_MS);
    void this.rpc.closed.then(() => clearTimeout(this.helloTimer));
  }

  private handler(method: string): RpcHandler {
    if (method === 'hello') return { run: (raw, ctx) => this.hello(raw, ctx) };
    if (!this.helloDone) {
      return {
        run: (_, ctx) => {
          ctx.closeAfterReply();
          throw new FerryError('ERR_FERRY_REFUSED', 'the first request must be hello');
        },
      };
    }
    const handler = isMethod(method)
      ? (this.options.handlers[method as Exclude<Method, 'hello'>] as Handler<Method> | undefined)
      : undefined;
    if (!handler) throw new FerryError('ERR_FERRY_INPUT', `unknown method "${method.slice(0, 100)}"`);
    if (!handler.roles.includes(this.peer.role))
      throw new FerryError('ERR_FERRY_REFUSED', `${method} is not open to ${this.peer.role} certificates`);
    return {
      timeoutMs: handler.timeoutMs,
      run: (raw, ctx) => {
        const params = PARAMS[method as Method](raw, 'params');
        const key = keyOf(method as Method, ctx.secret);
        return handler.run(params as never, {
          peer: this.peer,
          signal: ctx.signal,
          emit: ctx.emit,
          drained: ctx.drained,
          log: this.log,
          key,
        });
      },
    };
  }

  private hello(raw: unknown, ctx: RpcCallContext): HelloResult {
    try {
      const params = PARAMS.hello(raw, 'params');
      keyOf('hello', ctx.secret);
      if (params.protocol < MIN_PROTOCOL_VERSION) {
        throw new FerryError(
          'ERR_FERRY_REFUSED',
          `protocol ${params.protocol} is older than this agent accepts (${MIN_PROTOCOL_VERSION}): upgrade ferry`,
        );
      }
      clearTimeout(this.helloTimer);
      this.helloDone = true;
      this.log.info('client connected', { client: params.client, protocol: params.protocol });
      return { ...this.options.hello, protocol: PROTOCOL_VERSION, minProtocol: MIN_PROTOCOL_VERSION };
    } catch (err) {
      ctx.closeAfterReply();
      throw err;
    }
  }

  /** Ends the connection (agent stopping); handlers in flight are aborted. */
  shutdown(): void {
    this.rpc.end();
  }
}

export class ControlServer {
  private readonly server: tls.Server;
  private readonly connections = new Set<Connection>();

  constructor(private readonly options: ControlServerOptions) {
    const { ca, cert, key } = options.credentials;
    this.server = tls.createServer({ ca, cert, key, requestCert: true, rejectUnauthorized: true, minVersion: TLS_MIN_VERSION });
    this.server.on('secureConnection', (socket) => this.accept(socket));
    this.server.on('tlsClientError', (err, socket) => {
      // Refused during the handshake: a foreign CA, no certificate, or not TLS at all.
      options.log.warn('control connection refused', {
        remote: socket.remoteAddress,
        reason: (err as NodeJS.ErrnoException).code ?? err.message,
      });
    });
  }

  private accept(socket: tls.TLSSocket): void {
    const peer = socket.authorized ? peerOf(socket) : null;
    if (!peer) {
      // Belt and braces: rejectUnauthorized already dropped unverified peers.
      this.options.log.warn('control connection refused', {
        remote: socket.remoteAddress,
        reason: 'certificate is not a coordinator or host of this cluster',
      });
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
