/**
 * Requests and replies over JSON lines (json-lines.ts), the one RPC both of ferry's control
 * protocols use: the control API (coordinator → agent, agent → agent, over mutual TLS:
 * src/control) and the guest control socket (agent → guest process, over a unix socket:
 * src/guest). Each protocol brings its own method table, limits and first-request rule; this
 * module is the envelope, the bookkeeping and the wiping they share.
 *
 *   -> {"id":1,"method":"m","params":{...}}                 "secretBytes":n and n raw bytes may follow
 *   <- {"id":1,"event":{...}}                                zero or more, for streaming methods
 *   <- {"id":1,"ok":true,"result":...}  or  {"id":1,"ok":false,"error":{"code","message"}}
 *   <- {"id":null,"ok":false,"error":...}                    about no request in particular
 *
 * A secret trailer is handed to the handler as a Buffer of its own and zeroed here once the handler
 * has settled, however it ended; a request refused before its handler ran has it zeroed at once.
 */
import type { Duplex } from 'node:stream';
import { FerryError, isErrorCode, toFerryError, type ErrorCode } from '../errors.js';
import { encodeLine, LineReader, writeWithSecret, type LineLimits, type Received } from './json-lines.js';
import { int, obj, optional, str, type Check } from './validate.js';

export interface WireError {
  code: ErrorCode;
  message: string;
}

export interface Request {
  id: number;
  method: string;
  /** Checked by each method's own check; absent: {}. */
  params: unknown;
  /** The length of the raw bytes that followed the line. */
  secretBytes?: number;
}

export type Reply =
  { id: number; ok: true; result: unknown } | { id: number | null; ok: false; error: WireError } | { id: number; event: unknown };

/** The request envelope; `maxSecretBytes` is the protocol's largest trailer. */
export function checkRequest(maxSecretBytes: number): Check<Request> {
  const envelope = obj({
    id: int({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    method: str({ max: 100 }),
    params: optional((x) => x),
    secretBytes: optional(int({ min: 1, max: Math.max(1, maxSecretBytes) })),
  });
  return (v, field) => {
    const r = envelope(v, field);
    return { id: r.id, method: r.method, params: r.params ?? {}, ...(r.secretBytes ? { secretBytes: r.secretBytes } : {}) };
  };
}

export const checkWireError: Check<WireError> = (v, field) => {
  const e = obj({ code: str({ max: 64 }), message: str({ max: 10_000 }) })(v, field);
  return { code: e.code as ErrorCode, message: e.message };
};

/** A FerryError from an error reply, keeping its code when it is one of ours. */
export function errorFromWire(raw: unknown, peer: string): FerryError {
  try {
    const e = checkWireError(raw, 'error');
    return new FerryError(isErrorCode(e.code) ? e.code : 'ERR_FERRY_INTERNAL', e.message);
  } catch {
    return new FerryError('ERR_FERRY_FRAME', `${peer} sent a malformed error`);
  }
}

// ---- client ------------------------------------------------------------------------------------

export interface RpcClientOptions {
  /** The framing of replies (no trailers: `secretBytes` in a reply is just a field). */
  maxReplyBytes: number;
  /** Who answers, for messages: "host a at 127.0.0.1:7001", "guest /var/.../web1". */
  peer: string;
  /** A call's time limit when it names none; null: none. */
  defaultTimeoutMs: number | null;
  /** What pending and later calls get once the connection has closed. */
  closedError: () => FerryError;
}

export interface CallOptions<E = unknown> {
  onEvent?: (event: E) => void;
  /** null: no limit (streaming calls the other side ends). Default: the client's. */
  timeoutMs?: number | null;
  /** Raw bytes sent after the request line; the caller keeps and wipes its own copy. */
  secret?: Uint8Array;
}

interface Pending {
  resolve(result: unknown): void;
  reject(err: FerryError): void;
  onEvent?: (event: unknown) => void;
  timer?: NodeJS.Timeout;
}

export class RpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly reader: LineReader;
  private failure: FerryError | null = null;
  readonly closed: Promise<void>;

  constructor(
    private readonly socket: Duplex,
    private readonly options: RpcClientOptions,
  ) {
    this.reader = new LineReader({ maxLineBytes: options.maxReplyBytes, maxSecretBytes: 0 });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.fail(options.closedError());
        resolve();
      });
    });
  }

  /** Fails every pending and later call with `err` (the first failure sticks). */
  fail(err: FerryError): void {
    this.failure ??= err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(this.failure);
    }
    this.pending.clear();
  }

  /** The sticky failure, once the connection has failed or closed. */
  get error(): FerryError | null {
    return this.failure;
  }

  call(method: string, params: unknown, options: CallOptions = {}): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const p: Pending = { resolve, reject, onEvent: options.onEvent };
      const limit = options.timeoutMs === undefined ? this.options.defaultTimeoutMs : options.timeoutMs;
      if (limit !== null && limit > 0) {
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new FerryError('ERR_FERRY_TIMEOUT', `${this.options.peer} did not answer ${method} within ${limit} ms`));
        }, limit);
      }
      this.pending.set(id, p);
      if (options.secret) writeWithSecret(this.socket, { id, method, params }, options.secret);
      else this.socket.write(encodeLine({ id, method, params }));
    });
  }

  private onData(chunk: Buffer): void {
    let received: Received[];
    try {
      received = this.reader.feed(chunk);
    } catch (err) {
      this.fail(toFerryError(err, 'ERR_FERRY_FRAME'));
      this.socket.destroy();
      return;
    }
    for (const r of received) {
      if (r.error) {
        this.fail(new FerryError('ERR_FERRY_FRAME', `${this.options.peer} sent a reply that is not a JSON object`));
        this.socket.destroy();
        return;
      }
      this.onReply(r.message);
    }
  }

  private onReply(reply: Record<string, unknown>): void {
    if (reply.id === null && reply.ok === false) {
      // About no request in particular: the other side is closing the connection.
      this.failure ??= errorFromWire(reply.error, this.options.peer);
      return;
    }
    const p = typeof reply.id === 'number' ? this.pending.get(reply.id) : undefined;
    if (!p) return; // a reply to a call given up on
    if ('event' in reply) {
      p.onEvent?.(reply.event);
      return;
    }
    clearTimeout(p.timer);
    this.pending.delete(reply.id as number);
    if (reply.ok === true) p.resolve(reply.result);
    else p.reject(errorFromWire(reply.error, this.options.peer));
  }

  close(): void {
    this.failure ??= new FerryError('ERR_FERRY_NETWORK', 'the client was closed');
    this.socket.end();
    this.socket.destroy();
  }
}

// ---- server ------------------------------------------------------------------------------------

export interface RpcCallContext {
  id: number;
  /** The raw bytes that followed the request, if any; zeroed once the handler has settled. */
  secret: Buffer | null;
  /** Aborted when the call times out, the client goes away, or the server stops. */
  signal: AbortSignal;
  /** Sends one event line for this call (not after it was aborted). */
  emit(event: unknown): void;
  /**
   * Resolves once the connection has handed what it was given to the kernel (at once when it
   * has), or closed: a streaming call that waits on it between events goes no faster than its
   * client reads, and holds no more than one event's worth of replies in memory.
   */
  drained(): Promise<void>;
  /** Resolves when the connection closes. */
  closed: Promise<void>;
  /** Ends the connection once this call's reply is sent: what the client sent cannot be trusted further. */
  closeAfterReply(): void;
}

export interface RpcHandler {
  /** null: no limit; undefined: the server's default. */
  timeoutMs?: number | null;
  run(params: unknown, ctx: RpcCallContext): Promise<unknown> | unknown;
}

export interface RpcServerOptions {
  limits: LineLimits;
  maxInFlight: number;
  /** A call's time limit when its handler names none; null: none. */
  defaultTimeoutMs: number | null;
  /** The handler of `method`; a FerryError thrown here refuses the request with it. */
  handler(method: string): RpcHandler;
  /**
   * A line that is not a JSON object or not a request envelope: 'answer' replies {id: null, error}
   * and keeps serving (the line was whole, the stream is in step), 'close' replies and closes.
   * An oversized line or an impossible trailer always closes: where the next request starts is unknown.
   */
  malformed: 'answer' | 'close';
  /** Told of each call once it has been answered. */
  onAnswered?(call: { id: number; method: string; ms: number; error: FerryError | null }): void;
  /** Told of each refused line (never its content). */
  onRefused?(reason: string): void;
}

/** Serves one connection with `options`' handler table. */
export class RpcConnection {
  private readonly reader: LineReader;
  private readonly inFlight = new Map<number, AbortController>();
  private readonly checkEnvelope: Check<Request>;
  private ending = false;
  readonly closed: Promise<void>;

  constructor(
    private readonly socket: Duplex,
    private readonly options: RpcServerOptions,
  ) {
    this.reader = new LineReader(options.limits);
    this.checkEnvelope = checkRequest(options.limits.maxSecretBytes);
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.reader.wipe();
        this.abortAll(new FerryError('ERR_FERRY_NETWORK', 'the client went away'));
        resolve();
      });
    });
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  send(reply: Reply): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(encodeLine(reply));
  }

  /** Answers with `err` and ends the connection. */
  fail(id: number | null, err: unknown): void {
    this.send({ id, ok: false, error: toFerryError(err).toJSON() });
    this.end();
  }

  /** Ends the connection (the server is stopping, or the client cannot be trusted); calls in flight are aborted. */
  end(): void {
    if (this.ending) return;
    this.ending = true;
    this.abortAll(new FerryError('ERR_FERRY_NETWORK', 'the connection is closing'));
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private drained(): Promise<void> {
    const socket = this.socket;
    if (!socket.writableNeedDrain || socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        socket.off('drain', done);
        socket.off('close', done);
        resolve();
      };
      socket.on('drain', done);
      socket.on('close', done);
    });
  }

  private abortAll(reason: FerryError): void {
    for (const c of this.inFlight.values()) c.abort(reason);
    this.inFlight.clear();
  }

  private onData(chunk: Buffer): void {
    let received: Received[];
    try {
      received = this.reader.feed(chunk);
    } catch (err) {
      this.options.onRefused?.(toFerryError(err).message);
      this.fail(null, err);
      return;
    }
    for (const r of received) {
      if (this.ending) r.secret?.fill(0);
      else if (r.error) this.refuse(r.error);
      else this.onRequest(r.message, r.secret);
    }
  }

  private refuse(err: FerryError): void {
    this.options.onRefused?.(err.message);
    if (this.options.malformed === 'close') {
      this.reader.wipe();
      this.fail(null, err);
    } else {
      this.send({ id: null, ok: false, error: err.toJSON() });
    }
  }

  /** Takes a request and its trailer: either runs its handler, which owns the trailer from then on, or zeroes it. */
  private onRequest(message: Record<string, unknown>, secret: Buffer | null): void {
    let request: Request;
    try {
      request = this.checkEnvelope(message, 'request');
    } catch (err) {
      secret?.fill(0);
      this.refuse(toFerryError(err, 'ERR_FERRY_INPUT'));
      return;
    }
    const { id } = request;
    if (this.inFlight.has(id)) {
      secret?.fill(0);
      this.send({ id, ok: false, error: new FerryError('ERR_FERRY_INPUT', `request id ${id} is already in flight`).toJSON() });
      return;
    }
    if (this.inFlight.size >= this.options.maxInFlight) {
      secret?.fill(0);
      this.send({
        id,
        ok: false,
        error: new FerryError('ERR_FERRY_REFUSED', `more than ${this.options.maxInFlight} requests in flight`).toJSON(),
      });
      return;
    }
    void this.run(request, secret);
  }

  /** Runs one call. The handler is looked up and started synchronously, so calls start in the order they arrived. */
  private async run({ id, method, params }: Request, secret: Buffer | null): Promise<void> {
    const controller = new AbortController();
    this.inFlight.set(id, controller);
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    let running: Promise<unknown> | null = null;
    let closeAfter = false;
    let error: FerryError | null = null;
    try {
      const handler = this.options.handler(method);
      const limit = handler.timeoutMs === undefined ? this.options.defaultTimeoutMs : handler.timeoutMs;
      const timedOut = new Promise<never>((_, reject) => {
        if (limit === null) return;
        timer = setTimeout(() => {
          const err = new FerryError('ERR_FERRY_TIMEOUT', `${method} took longer than ${limit} ms`);
          controller.abort(err);
          reject(err);
        }, limit);
      });
      const ctx: RpcCallContext = {
        id,
        secret,
        signal: controller.signal,
        emit: (event) => {
          if (!controller.signal.aborted) this.send({ id, event });
        },
        drained: () => this.drained(),
        closed: this.closed,
        closeAfterReply: () => (closeAfter = true),
      };
      running = toPromise(() => handler.run(params, ctx));
      // Not at the time limit: a handler still running may still be handing the trailer on.
      const wipe = () => secret?.fill(0);
      running.then(wipe, wipe);
      const result = await Promise.race([running, timedOut]);
      this.send({ id, ok: true, result: result ?? null });
    } catch (err) {
      error = toFerryError(err);
      this.send({ id, ok: false, error: error.toJSON() });
    } finally {
      if (!running) secret?.fill(0);
      clearTimeout(timer);
      this.inFlight.delete(id);
    }
    this.options.onAnswered?.({ id, method, ms: Math.round(performance.now() - started), error });
    if (closeAfter) this.end();
  }
}

/** Runs `fn` now (synchronously up to its first await) and gives its outcome as a promise, a throw included. */
function toPromise<T>(fn: () => Promise<T> | T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err);
  }
}
