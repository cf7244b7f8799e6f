/**
 * A QMP client: QEMU's JSON machine protocol, one JSON object a line, over the unix socket QEMU
 * listens on. Connect, read the greeting, leave negotiation mode (`qmp_capabilities`), then run
 * commands with ids, many in flight, each answer matched to its command by id. Asynchronous events
 * go to subscribers.
 *
 * QEMU is a peer whose answers ferry acts on (a migration's status decides who runs the guest), so
 * nothing is used unchecked. The framing is strict: a line that is not JSON, an envelope with a
 * member QMP does not define, or an answer to an id this client never sent breaks the connection,
 * and every command and event waiter still pending is rejected with ERR_FERRY_QEMU. The connection
 * stays failed; there is no resync. What is inside an answer is checked by the readers in
 * qmp-schema.ts before a wrapper below returns it.
 */
import net from 'node:net';
import type { ErrorCode } from '../../errors.js';
import {
  QmpError,
  capabilitiesArgument,
  checkUri,
  expectEmpty,
  isPlainObject,
  malformed,
  parametersArgument,
  printable,
  readGreeting,
  readMachines,
  readMigrationInfo,
  readMigrationParameters,
  readVersion,
  readVmStatus,
  type MachineType,
  type MigrationCapability,
  type MigrationInfo,
  type MigrationParameters,
  type QemuVersion,
  type VmStatus,
} from './qmp-schema.js';

export {
  MIGRATION_CAPABILITIES,
  QmpError,
  type MachineType,
  type MigrationCapability,
  type MigrationInfo,
  type MigrationParameters,
  type MigrationRamStats,
  type QemuVersion,
  type VmStatus,
} from './qmp-schema.js';

/** Big enough for `query-qmp-schema` (about 240 KB on QEMU 10.0), the largest answer QEMU gives. */
const DEFAULT_MAX_LINE_BYTES = 1 << 20;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
/** How often connect() tries again while QEMU has not created its socket yet. */
const CONNECT_RETRY_MS = 50;

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export interface ConnectOptions {
  /** For the whole of connect: the socket appearing, the greeting and `qmp_capabilities`. */
  timeoutMs?: number;
  /** A line longer than this breaks the connection. */
  maxLineBytes?: number;
}

export interface ExecuteOptions {
  timeoutMs?: number;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: QmpError) => void;
  timer: NodeJS.Timeout;
}

interface EventWaiter {
  name: string;
  match: (event: QmpEvent) => boolean;
  resolve: (event: QmpEvent) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class QmpClient {
  /** Resolves with why the connection ended (QEMU gone, bad framing, or close()). */
  readonly closed: Promise<QmpError>;

  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<(event: QmpEvent) => void>();
  private readonly waiters = new Set<EventWaiter>();
  private greeting: { resolve: () => void; reject: (err: QmpError) => void } | null = null;
  private failure: QmpError | null = null;
  private greeted: QemuVersion = { major: 0, minor: 0, micro: 0, package: '' };
  private resolveClosed!: (reason: QmpError) => void;
  private readonly lines: LineSplitter;

  private constructor(
    private readonly socket: net.Socket,
    maxLineBytes: number,
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.lines = new LineSplitter(
      maxLineBytes,
      (line) => this.onLine(line),
      (reason) => this.fail(reason),
    );
    socket.on('data', (chunk: Buffer) => this.lines.feed(chunk));
    // A reset is how a killed QEMU's end of the socket usually looks.
    socket.on('error', (err) =>
      this.fail(
        `${/^(ECONNRESET|EPIPE)$/.test(errnoOf(err)) ? 'QEMU closed the QMP connection' : 'the QMP connection failed'} (${errnoOf(err)})`,
      ),
    );
    socket.on('close', () => this.fail('QEMU closed the QMP connection'));
  }

  /** QEMU's version, from its greeting. */
  get version(): QemuVersion {
    return { ...this.greeted };
  }

  /**
   * Connects to QEMU's QMP socket at `socketPath`, waiting (within the timeout) for QEMU to create
   * it, so a caller can connect right after starting QEMU.
   */
  static async connect(socketPath: string, options: ConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const deadline = performance.now() + timeoutMs;
    const client = new QmpClient(await openSocket(socketPath, deadline, timeoutMs), options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    const left = (): number => Math.max(1, deadline - performance.now());
    const timer = setTimeout(() => client.fail(`no QMP greeting from ${socketPath} within ${timeoutMs} ms`, 'ERR_FERRY_TIMEOUT'), left());
    try {
      await new Promise<void>((resolve, reject) => (client.greeting = { resolve, reject }));
      expectEmpty('qmp_capabilities', await client.execute('qmp_capabilities', undefined, { timeoutMs: left() }));
      return client;
    } catch (err) {
      await client.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs one command; resolves with its `return` member, unchecked: the wrappers below check it. */
  execute(command: string, args?: Record<string, unknown>, options: ExecuteOptions = {}): Promise<unknown> {
    if (typeof command !== 'string' || command === '') {
      return Promise.reject(new QmpError('ERR_FERRY_INPUT', 'a QMP command needs a name'));
    }
    if (args !== undefined && !isPlainObject(args)) {
      return Promise.reject(new QmpError('ERR_FERRY_INPUT', `${command}: QMP arguments must be an object`, { command }));
    }
    if (this.failure) return Promise.reject(this.lost(command));
    const timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // A late answer to this id is dropped (ids below nextId are known to be ours).
        this.pending.delete(id);
        reject(new QmpError('ERR_FERRY_TIMEOUT', `QEMU did not answer ${command} within ${timeoutMs} ms`, { command }));
      }, timeoutMs);
      this.pending.set(id, { command, resolve, reject, timer });
      this.socket.write(JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id }) + '\n');
    });
  }

  /** Calls `listener` with every event; returns the function that unsubscribes it. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * The next event named `name` (that `match` accepts). Call it before the command that causes
   * the event: QEMU may send the event before the command's answer.
   */
  waitForEvent(name: string, options: { timeoutMs: number; match?: (event: QmpEvent) => boolean }): Promise<QmpEvent> {
    if (this.failure) return Promise.reject(this.lost(`waiting for ${name}`));
    return new Promise((resolve, reject) => {
      const waiter: EventWaiter = {
        name,
        match: options.match ?? (() => true),
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(new QmpError('ERR_FERRY_TIMEOUT', `QEMU sent no ${name} event within ${options.timeoutMs} ms`));
        }, options.timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  /** Closes the connection; whatever is pending is rejected. QEMU keeps running. */
  async close(): Promise<void> {
    this.fail('the QMP connection was closed by ferry');
    await this.closed;
    if (!this.socket.closed) await new Promise((resolve) => this.socket.once('close', resolve));
  }

  async queryStatus(options?: ExecuteOptions): Promise<VmStatus> {
    return readVmStatus(await this.execute('query-status', undefined, options));
  }

  async queryVersion(options?: ExecuteOptions): Promise<QemuVersion> {
    return readVersion('query-version', await this.execute('query-version', undefined, options));
  }

  async queryMigrate(options?: ExecuteOptions): Promise<MigrationInfo> {
    return readMigrationInfo(await this.execute('query-migrate', undefined, options));
  }

  async queryMigrateParameters(options?: ExecuteOptions): Promise<MigrationParameters> {
    return readMigrationParameters(await this.execute('query-migrate-parameters', undefined, options));
  }

  async queryMachines(options?: ExecuteOptions): Promise<MachineType[]> {
    return readMachines(await this.execute('query-machines', undefined, options));
  }

  async migrateSetCapabilities(capabilities: Partial<Record<MigrationCapability, boolean>>, options?: ExecuteOptions): Promise<void> {
    await this.void('migrate-set-capabilities', capabilitiesArgument(capabilities), options);
  }

  async migrateSetParameters(parameters: MigrationParameters, options?: ExecuteOptions): Promise<void> {
    await this.void('migrate-set-parameters', parametersArgument(parameters), options);
  }

  /** Starts an outgoing migration to `uri` (e.g. `unix:/path`); QEMU answers at once and carries on. */
  async migrate(uri: string, options?: ExecuteOptions): Promise<void> {
    return this.void('migrate', { uri: checkUri('migrate', uri) }, options);
  }

  /**
   * Starts listening for an incoming migration on a QEMU started with `-incoming defer`.
   * `exitOnError` exists from QEMU 9.1 on (its default there: true, QEMU exits when the incoming
   * migration fails); older QEMU refuses the argument, so it is only sent when given.
   */
  async migrateIncoming(uri: string, options: ExecuteOptions & { exitOnError?: boolean } = {}): Promise<void> {
    const args: Record<string, unknown> = { uri: checkUri('migrate-incoming', uri) };
    if (options.exitOnError !== undefined) args['exit-on-error'] = options.exitOnError;
    return this.void('migrate-incoming', args, { timeoutMs: options.timeoutMs });
  }

  /** Lets a migration paused in `state` (with `pause-before-switchover`: `pre-switchover`) go on. */
  async migrateContinue(state: string, options?: ExecuteOptions): Promise<void> {
    return this.void('migrate-continue', { state }, options);
  }

  async migrateCancel(options?: ExecuteOptions): Promise<void> {
    return this.void('migrate_cancel', undefined, options);
  }

  async cont(options?: ExecuteOptions): Promise<void> {
    return this.void('cont', undefined, options);
  }

  async stop(options?: ExecuteOptions): Promise<void> {
    return this.void('stop', undefined, options);
  }

  /**
   * Asks QEMU to exit and waits (within the timeout) for it to close the connection. The
   * connection ending before the answer also counts as done: QEMU is gone either way.
   */
  async quit(options: ExecuteOptions = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    try {
      await this.void('quit', undefined, { timeoutMs });
    } catch (err) {
      if ((err as QmpError).code !== 'ERR_FERRY_QEMU' || !this.failure) throw err;
    }
    let timer: NodeJS.Timeout | undefined;
    const gone = await Promise.race([this.closed, new Promise<null>((resolve) => (timer = setTimeout(resolve, timeoutMs, null)))]);
    clearTimeout(timer);
    if (gone) return;
    await this.close();
    throw new QmpError('ERR_FERRY_TIMEOUT', `QEMU answered quit but kept the QMP connection open for ${timeoutMs} ms`, { command: 'quit' });
  }

  private async void(command: string, args?: Record<string, unknown>, options?: ExecuteOptions): Promise<void> {
    expectEmpty(command, await this.execute(command, args, options));
  }

  private onLine(line: string): void {
    if (this.failure) return;
    if (this.greeting) {
      try {
        this.greeted = readGreeting(line);
      } catch (err) {
        return this.fail((err as QmpError).message);
      }
      this.greeting.resolve();
      this.greeting = null;
      return;
    }
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      return this.fail('QEMU sent a line that is not JSON');
    }
    if (!isPlainObject(message)) return this.fail('QEMU sent a line that is not a JSON object');
    if ('event' in message) return this.onEventMessage(message);
    const kind = 'return' in message ? 'return' : 'error' in message ? 'error' : null;
    if (!kind) return this.fail('QEMU sent a message that is neither an answer nor an event');
    const extra = Object.keys(message).find((k) => k !== kind && k !== 'id');
    if (extra !== undefined)
      return this.fail(`QEMU sent an answer with a member QMP does not define (${JSON.stringify(printable(extra, 40))})`);
    const id = message.id;
    // Every command carries an id, so an answer without one cannot be matched to anything.
    if (!Number.isSafeInteger(id)) return this.fail(`QEMU sent an answer without a command id of ferry's`);
    const pending = this.pending.get(id as number);
    if (!pending) {
      if ((id as number) > 0 && (id as number) < this.nextId) return; // the late answer of a timed-out command
      return this.fail(`QEMU answered a command ferry never sent (id ${id as number})`);
    }
    this.pending.delete(id as number);
    clearTimeout(pending.timer);
    if (kind === 'return') return pending.resolve(message.return);
    const error = isPlainObject(message.error) ? message.error : null;
    if (!error || typeof error.class !== 'string' || typeof error.desc !== 'string') {
      return pending.reject(malformed(pending.command, 'the error has no class and description'));
    }
    pending.reject(
      new QmpError('ERR_FERRY_QEMU', `QEMU refused ${pending.command}: ${printable(error.desc)} (${printable(error.class)})`, {
        command: pending.command,
        qmpClass: printable(error.class),
      }),
    );
  }

  private onEventMessage(message: Record<string, unknown>): void {
    const extra = Object.keys(message).find((k) => k !== 'event' && k !== 'data' && k !== 'timestamp');
    const ts = isPlainObject(message.timestamp) ? message.timestamp : null;
    if (
      extra !== undefined ||
      typeof message.event !== 'string' ||
      (message.data !== undefined && !isPlainObject(message.data)) ||
      !ts ||
      !Number.isSafeInteger(ts.seconds) ||
      !Number.isSafeInteger(ts.microseconds)
    ) {
      return this.fail('QEMU sent a malformed event');
    }
    const event: QmpEvent = {
      event: message.event,
      data: (message.data as Record<string, unknown> | undefined) ?? {},
      timestamp: { seconds: ts.seconds as number, microseconds: ts.microseconds as number },
    };
    for (const waiter of this.waiters) {
      if (waiter.name !== event.event) continue;
      let matched: boolean;
      try {
        matched = waiter.match(event);
      } catch (err) {
        this.waiters.delete(waiter);
        clearTimeout(waiter.timer);
        waiter.reject(err as Error);
        continue;
      }
      if (!matched) continue;
      this.waiters.delete(waiter);
      clearTimeout(waiter.timer);
      waiter.resolve(event);
    }
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        // A listener's bug must not stop the lines after this one from being read; it still
        // surfaces, as one thrown from an EventEmitter listener would.
        process.nextTick(() => {
          throw err;
        });
      }
    }
  }

  /** Breaks the connection for good: every pending command and event waiter is rejected. */
  private fail(reason: string, code: ErrorCode = 'ERR_FERRY_QEMU'): void {
    if (this.failure) return;
    this.failure = new QmpError(code, reason);
    this.lines.stop();
    this.socket.destroy();
    this.greeting?.reject(this.failure);
    this.greeting = null;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(this.lost(p.command));
    }
    this.pending.clear();
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(this.lost(`waiting for ${w.name}`));
    }
    this.waiters.clear();
    this.resolveClosed(this.failure);
  }

  private lost(what: string): QmpError {
    const reason = this.failure?.message ?? 'the QMP connection is gone';
    return new QmpError('ERR_FERRY_QEMU', `${what}: ${reason}`, {
      command: what.startsWith('waiting') ? undefined : what,
      cause: this.failure,
    });
  }
}

/**
 * Splits a byte stream into lines, refusing one longer than the limit before buffering more of it.
 * QEMU ends its lines with CRLF; JSON.parse takes the CR as whitespace.
 */
class LineSplitter {
  private parts: Buffer[] = [];
  private buffered = 0;
  private stopped = false;

  constructor(
    private readonly maxLineBytes: number,
    private readonly onLine: (line: string) => void,
    private readonly onError: (reason: string) => void,
  ) {}

  feed(chunk: Buffer): void {
    let at = 0;
    while (!this.stopped) {
      const nl = chunk.indexOf(0x0a, at);
      const end = nl === -1 ? chunk.length : nl;
      if (this.buffered + end - at > this.maxLineBytes) {
        return this.onError(`QEMU sent a line longer than ${this.maxLineBytes} bytes`);
      }
      if (nl === -1) {
        if (at < chunk.length) this.parts.push(chunk.subarray(at));
        this.buffered += chunk.length - at;
        return;
      }
      this.parts.push(chunk.subarray(at, nl));
      const line = Buffer.concat(this.parts).toString('utf8');
      this.parts = [];
      this.buffered = 0;
      at = nl + 1;
      this.onLine(line);
    }
  }

  stop(): void {
    this.stopped = true;
    this.parts = [];
  }
}

/** Connects, retrying while the socket does not exist yet or nobody listens on it yet. */
async function openSocket(socketPath: string, deadline: number, timeoutMs: number): Promise<net.Socket> {
  for (;;) {
    const socket = net.createConnection(socketPath);
    const outcome = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      socket.once('connect', () => resolve(null));
      socket.once('error', resolve);
    });
    if (!outcome) return socket;
    socket.destroy();
    const retry = outcome.code === 'ENOENT' || outcome.code === 'ECONNREFUSED';
    if (!retry)
      throw new QmpError('ERR_FERRY_QEMU', `cannot connect to QEMU's QMP socket ${socketPath} (${errnoOf(outcome)})`, { cause: outcome });
    if (performance.now() + CONNECT_RETRY_MS > deadline) {
      throw new QmpError(
        'ERR_FERRY_TIMEOUT',
        `QEMU's QMP socket ${socketPath} did not accept a connection within ${timeoutMs} ms (${errnoOf(outcome)})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, CONNECT_RETRY_MS));
  }
}

function errnoOf(err: Error): string {
  return (err as NodeJS.ErrnoException).code ?? printable(err.message);
}
