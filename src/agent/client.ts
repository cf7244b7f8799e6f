/**
 * The typed client of the control API: the CLI uses it with the coordinator's certificate, agents
 * use it with their own host certificate to ask each other (the commit resolve query). It checks
 * the agent's certificate against the cluster CA and the host name it expects (SAN DNS:NAME), and
 * says hello (the version check) before anything else.
 *
 *   const client = await AgentClient.connect({ address: '127.0.0.1:7001', host: 'a', credentials });
 *   const { guests } = await client.call('guest.list', {});
 *   // a keyed, streaming method: the key and nonce as raw bytes after the line, events until the result
 *   await client.call('migration.start-outgoing', params, { secret: keyAndNonce, timeoutMs: null, onEvent: (e) => show(e) });
 *   client.close();
 */
import tls from 'node:tls';
import { FerryError, isErrorCode } from '../errors.js';
import { encodeLine, LineReader, writeWithSecret, type Received } from '../json-lines.js';
import {
  checkWireError, KEY_TRAILER_PROTOCOL, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, RESPONSE_LINES,
  type Event, type HelloResult, type Method, type Params, type Result,
} from './protocol.js';
import { parseAddress } from '../coordinator/address.js';
import type { TlsCredentials } from './server.js';

export const CONNECT_TIMEOUT_MS = 10_000;
/** The CLI's own limit on a call, a little above the agent's default so the agent's error wins. */
export const CLIENT_CALL_TIMEOUT_MS = 35_000;

export interface ConnectOptions {
  /** HOST:PORT of the agent's control API. */
  address: string;
  /** The host name the agent's certificate must carry. */
  host: string;
  credentials: TlsCredentials;
  /** Free text the agent logs. */
  client?: string;
  timeoutMs?: number;
}

export interface CallOptions<E> {
  onEvent?: (event: E) => void;
  /** null: no client-side limit (streaming calls ended by the agent). */
  timeoutMs?: number | null;
  /**
   * Keyed methods: the key and nonce, sent as raw bytes after the request line. The client writes
   * a copy it zeroes once the socket has taken it; the caller may wipe its own as soon as call() returns.
   */
  secret?: Uint8Array;
}

interface Pending {
  resolve(result: unknown): void;
  reject(err: FerryError): void;
  onEvent?: (event: unknown) => void;
  timer?: NodeJS.Timeout;
}

const TLS_REFUSAL = /CERT|ALERT|UNABLE_TO|SELF_SIGNED|ALTNAME|UNKNOWN_CA|HANDSHAKE|EPROTO/i;

/** Why a connection to an agent failed, as one coded line. */
function connectionError(err: NodeJS.ErrnoException, host: string, address: string): FerryError {
  const code = err.code ?? '';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new FerryError('ERR_FERRY_REFUSED', `the agent at ${address} is not host "${host}": its certificate names another host`);
  }
  if (/UNABLE_TO|SELF_SIGNED|CERT_(SIGNATURE|UNTRUSTED|HAS_EXPIRED|NOT_YET)|LEAF_SIGNATURE/i.test(code)) {
    return new FerryError('ERR_FERRY_REFUSED', `the agent at ${address} (host ${host}) has a certificate the cluster CA did not sign or that is not valid (${code})`);
  }
  if (TLS_REFUSAL.test(code) || TLS_REFUSAL.test(err.message)) {
    return new FerryError('ERR_FERRY_REFUSED', `host ${host} at ${address} refused our certificate (${code || err.message}): is it from this cluster's CA and in date?`);
  }
  if (code === 'ECONNRESET' || code === 'EPIPE') {
    return new FerryError('ERR_FERRY_REFUSED', `host ${host} at ${address} closed the connection during the handshake: it may have refused our certificate`);
  }
  return new FerryError('ERR_FERRY_NETWORK', `cannot reach host ${host} at ${address}: ${code || err.message}`);
}

export class AgentClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly reader = new LineReader(RESPONSE_LINES);
  private failure: FerryError | null = null;
  private helloDone = false;
  /** What the agent said on hello: its version, protocol, host name. */
  agent!: HelloResult;

  private constructor(private readonly socket: tls.TLSSocket, private readonly host: string, private readonly address: string) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.failAll(this.failure ?? connectionError(err, host, address)));
    socket.on('close', () => this.failAll(this.helloDone
      ? new FerryError('ERR_FERRY_NETWORK', `the connection to host ${host} at ${address} closed`)
      // TLS 1.3: the agent checks our certificate after our side of the handshake; a refusal
      // arrives as an alert or just a close before the hello answer.
      : new FerryError('ERR_FERRY_REFUSED', `host ${host} at ${address} closed the connection before answering hello: it refused our certificate (is it from this cluster's CA and in date?)`)));
  }

  static async connect(options: ConnectOptions): Promise<AgentClient> {
    const { host: hostname, port } = parseAddress(options.address, `control address of ${options.host}`);
    const timeoutMs = options.timeoutMs ?? CONNECT_TIMEOUT_MS;
    const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({
        host: hostname,
        port,
        servername: options.host, // checked against the certificate's SAN DNS:NAME
        ca: options.credentials.ca,
        cert: options.credentials.cert,
        key: options.credentials.key,
        minVersion: 'TLSv1.3',
        rejectUnauthorized: true,
      });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new FerryError('ERR_FERRY_TIMEOUT', `no TLS handshake with host ${options.host} at ${options.address} within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('secureConnect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        s.destroy();
        reject(connectionError(err, options.host, options.address));
      });
    });
    const client = new AgentClient(socket, options.host, options.address);
    try {
      client.agent = await client.call('hello', { protocol: PROTOCOL_VERSION, client: options.client ?? 'ferry' }, { timeoutMs });
      client.helloDone = true;
    } catch (err) {
      client.close();
      throw err;
    }
    if (client.agent.host !== options.host) {
      client.close();
      throw new FerryError('ERR_FERRY_REFUSED', `the agent at ${options.address} says it is host "${client.agent.host}", not "${options.host}"`);
    }
    if (client.agent.protocol < MIN_PROTOCOL_VERSION) {
      client.close();
      throw new FerryError('ERR_FERRY_REFUSED', `host ${options.host} speaks control protocol ${client.agent.protocol}; this ferry needs ${MIN_PROTOCOL_VERSION} or later: upgrade the agent`);
    }
    return client;
  }

  /** True when the agent runs an older control protocol than this client (upgrade it). */
  get agentIsOlder(): boolean {
    return this.agent.protocol < PROTOCOL_VERSION;
  }

  call<M extends Method>(method: M, params: Params<M>, options: CallOptions<Event<M>> = {}): Promise<Result<M>> {
    if (this.failure) return Promise.reject(this.failure);
    if (options.secret && this.agent && this.agent.protocol < KEY_TRAILER_PROTOCOL) {
      // Protocol 1 took the key in JSON: it would read the trailer as the next request.
      return Promise.reject(new FerryError('ERR_FERRY_REFUSED', `host ${this.host} speaks control protocol ${this.agent.protocol}, which cannot take a migration key as raw bytes (${KEY_TRAILER_PROTOCOL} or later): upgrade the agent`));
    }
    const id = this.nextId++;
    return new Promise<Result<M>>((resolve, reject) => {
      const pending: Pending = { resolve: resolve as (r: unknown) => void, reject, onEvent: options.onEvent as ((e: unknown) => void) | undefined };
      const limit = options.timeoutMs === undefined ? CLIENT_CALL_TIMEOUT_MS : options.timeoutMs;
      if (limit !== null) {
        pending.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new FerryError('ERR_FERRY_TIMEOUT', `host ${this.host} did not answer ${method} within ${limit} ms`));
        }, limit);
      }
      this.pending.set(id, pending);
      if (options.secret) writeWithSecret(this.socket, { id, method, params }, options.secret);
      else this.socket.write(encodeLine({ id, method, params }));
    });
  }

  private onData(chunk: Buffer): void {
    let received: Received[];
    try {
      received = this.reader.feed(chunk);
    } catch (err) {
      this.failAll(err as FerryError);
      this.socket.destroy();
      return;
    }
    for (const r of received) {
      if (r.error) {
        this.failAll(new FerryError('ERR_FERRY_FRAME', `host ${this.host} sent a reply that is not a JSON object`));
        this.socket.destroy();
        return;
      }
      this.onReply(r.message);
    }
  }

  private onReply(reply: { id?: unknown; ok?: unknown; result?: unknown; error?: unknown; event?: unknown }): void {
    if (reply.id === null && reply.ok === false) {
      // An error about no request in particular: the agent is closing the connection.
      this.failure = this.remoteError(reply.error);
      return;
    }
    const pending = typeof reply.id === 'number' ? this.pending.get(reply.id) : undefined;
    if (!pending) return; // a reply to a call we gave up on
    if ('event' in reply) {
      pending.onEvent?.(reply.event);
      return;
    }
    clearTimeout(pending.timer);
    this.pending.delete(reply.id as number);
    if (reply.ok === true) pending.resolve(reply.result);
    else pending.reject(this.remoteError(reply.error));
  }

  private remoteError(raw: unknown): FerryError {
    try {
      const e = checkWireError(raw, 'error');
      return new FerryError(isErrorCode(e.code) ? e.code : 'ERR_FERRY_INTERNAL', e.message);
    } catch {
      return new FerryError('ERR_FERRY_FRAME', `host ${this.host} sent a malformed error`);
    }
  }

  private failAll(err: FerryError): void {
    this.failure ??= err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(this.failure);
    }
    this.pending.clear();
  }

  close(): void {
    this.failure ??= new FerryError('ERR_FERRY_NETWORK', 'the client was closed');
    this.socket.end();
    this.socket.destroy();
  }
}
