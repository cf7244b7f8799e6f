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
import { FerryError } from '../errors.js';
import { RpcClient, type CallOptions } from '../common/rpc.js';
import {
  KEY_TRAILER_PROTOCOL,
  MAX_RESPONSE_BYTES,
  MIN_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
  type Event,
  type HelloResult,
  type Method,
  type Params,
  type Result,
} from './protocol.js';
import { parseAddress } from '../common/address.js';
import { TLS_MIN_VERSION, type TlsCredentials } from './tls.js';

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

export type { CallOptions };

const TLS_REFUSAL = /CERT|ALERT|UNABLE_TO|SELF_SIGNED|ALTNAME|UNKNOWN_CA|HANDSHAKE|EPROTO/i;

/** Why a connection to an agent failed, as one coded line. */
function connectionError(err: NodeJS.ErrnoException, host: string, address: string): FerryError {
  const code = err.code ?? '';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new FerryError('ERR_FERRY_REFUSED', `the agent at ${address} is not host "${host}": its certificate names another host`);
  }
  if (/UNABLE_TO|SELF_SIGNED|CERT_(SIGNATURE|UNTRUSTED|HAS_EXPIRED|NOT_YET)|LEAF_SIGNATURE/i.test(code)) {
    return new FerryError(
      'ERR_FERRY_REFUSED',
      `the agent at ${address} (host ${host}) has a certificate the cluster CA did not sign or that is not valid (${code})`,
      { detail: { untrusted: 'theirs' } },
    );
  }
  if (TLS_REFUSAL.test(code) || TLS_REFUSAL.test(err.message)) {
    return new FerryError(
      'ERR_FERRY_REFUSED',
      `host ${host} at ${address} refused our certificate (${code || err.message}): is it from this cluster's CA and in date?`,
      { detail: { untrusted: 'ours' } },
    );
  }
  if (code === 'ECONNRESET' || code === 'EPIPE') {
    return new FerryError(
      'ERR_FERRY_REFUSED',
      `host ${host} at ${address} closed the connection during the handshake: it may have refused our certificate`,
      { detail: { untrusted: 'ours' } },
    );
  }
  return new FerryError('ERR_FERRY_NETWORK', `cannot reach host ${host} at ${address}: ${code || err.message}`);
}

export class AgentClient {
  private readonly rpc: RpcClient;
  private helloDone = false;
  /** What the agent said on hello: its version, protocol, host name. */
  agent!: HelloResult;

  private constructor(
    private readonly socket: tls.TLSSocket,
    private readonly host: string,
    address: string,
  ) {
    this.rpc = new RpcClient(socket, {
      maxReplyBytes: MAX_RESPONSE_BYTES,
      peer: `host ${host}`,
      defaultTimeoutMs: CLIENT_CALL_TIMEOUT_MS,
      closedError: () =>
        this.helloDone
          ? new FerryError('ERR_FERRY_NETWORK', `the connection to host ${host} at ${address} closed`)
          : // TLS 1.3: the agent checks our certificate after our side of the handshake; a refusal
            // arrives as an alert or just a close before the hello answer.
            new FerryError(
              'ERR_FERRY_REFUSED',
              `host ${host} at ${address} closed the connection before answering hello: it refused our certificate (is it from this cluster's CA and in date?)`,
            ),
    });
    socket.on('error', (err) => this.rpc.fail(this.rpc.error ?? connectionError(err, host, address)));
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
        minVersion: TLS_MIN_VERSION,
        rejectUnauthorized: true,
      });
      const timer = setTimeout(() => {
        s.destroy();
        reject(
          new FerryError('ERR_FERRY_TIMEOUT', `no TLS handshake with host ${options.host} at ${options.address} within ${timeoutMs} ms`),
        );
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
      throw new FerryError(
        'ERR_FERRY_REFUSED',
        `the agent at ${options.address} says it is host "${client.agent.host}", not "${options.host}"`,
      );
    }
    if (client.agent.protocol < MIN_PROTOCOL_VERSION) {
      client.close();
      throw new FerryError(
        'ERR_FERRY_REFUSED',
        `host ${options.host} speaks control protocol ${client.agent.protocol}; this ferry needs ${MIN_PROTOCOL_VERSION} or later: upgrade the agent`,
      );
    }
    return client;
  }

  /** True when the agent runs an older control protocol than this client (upgrade it). */
  get agentIsOlder(): boolean {
    return this.agent.protocol < PROTOCOL_VERSION;
  }

  /**
   * One call. Keyed methods take the key and nonce as `secret`, sent as raw bytes after the request
   * line: the client writes a copy it zeroes once the socket has taken it, so the caller may wipe
   * its own as soon as call() returns.
   */
  call<M extends Method>(method: M, params: Params<M>, options: CallOptions<Event<M>> = {}): Promise<Result<M>> {
    if (options.secret && this.agent && this.agent.protocol < KEY_TRAILER_PROTOCOL) {
      // Protocol 1 took the key in JSON: it would read the trailer as the next request.
      return Promise.reject(
        new FerryError(
          'ERR_FERRY_REFUSED',
          `host ${this.host} speaks control protocol ${this.agent.protocol}, which cannot take a migration key as raw bytes (${KEY_TRAILER_PROTOCOL} or later): upgrade the agent`,
        ),
      );
    }
    return this.rpc.call(method, params, options as CallOptions) as Promise<Result<M>>;
  }

  close(): void {
    this.rpc.close();
  }

  /** True once the connection has failed or closed: an error of a call is then this side's loss, not the agent's answer. */
  get lost(): boolean {
    return this.rpc.error !== null;
  }
}
