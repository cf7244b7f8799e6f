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
 * stays failed; there is no resync. Inside an answer, the members a wrapper reads are checked for
 * presence and type, and members it does not know are ignored: the QMP specification lets every
 * new QEMU add members to an answer and asks clients to ignore them.
 */
import net from 'node:net';
import { FerryError, type ErrorCode } from '../../errors.js';

/** Big enough for `query-qmp-schema` (about 240 KB on QEMU 10.0), the largest answer QEMU gives. */
const DEFAULT_MAX_LINE_BYTES = 1 << 20;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
/** How often connect() tries again while QEMU has not created its socket yet. */
const CONNECT_RETRY_MS = 50;

/** A coded error about QEMU, with the command it answers and QEMU's error class as fields. */
export class QmpError extends FerryError {
  /** The command this error is about, when there is one. */
  readonly command: string | undefined;
  /** QEMU's error class (`GenericError`, `CommandNotFound`, ...) when QEMU refused the command. */
  readonly qmpClass: string | undefined;

  constructor(code: ErrorCode, message: string, detail: { command?: string; qmpClass?: string; cause?: unknown } = {}) {
    super(code, message, { cause: detail.cause });
    this.name = 'QmpError';
    this.command = detail.command;
    this.qmpClass = detail.qmpClass;
  }
}

export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
  /** The distribution's package version, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`. */
  package: string;
}

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

export interface VmStatus {
  /** QEMU's run state: `prelaunch`, `running`, `paused`, `inmigrate`, `postmigrate`, `finish-migrate`, ... */
  status: string;
  running: boolean;
}

/** RAM figures of a migration; the members QEMU 7.2 and 10.0 both give. */
export interface MigrationRamStats {
  /** Bytes sent so far. */
  transferred: number;
  /** Bytes of RAM still dirty. */
  remaining: number;
  /** Bytes of guest RAM. */
  total: number;
  /** Pages found to be zero (sent as markers). */
  duplicate: number;
  /** Pages sent whole, and their bytes. */
  normal: number;
  normalBytes: number;
  /** Times the dirty log was synced: 1 after the first pass, one more per pass after it. */
  dirtySyncCount: number;
  /** Throughput, megabits a second. */
  mbps: number;
  /** Pages dirtied a second (0 until the second sync). */
  dirtyPagesRate: number;
  pagesPerSecond: number;
  pageSize: number;
  multifdBytes: number;
  precopyBytes: number;
  downtimeBytes: number;
  postcopyBytes: number;
}

export interface MigrationInfo {
  /** `none` (QEMU sends no status before any migration), `setup`, `active`, `pre-switchover`, `device`, `completed`, `failed`, `cancelling`, `cancelled`, ... */
  status: string;
  ram?: MigrationRamStats;
  totalTimeMs?: number;
  /** The guest's pause at switch-over, once completed. */
  downtimeMs?: number;
  /** QEMU's estimate while active. */
  expectedDowntimeMs?: number;
  setupTimeMs?: number;
  cpuThrottlePercentage?: number;
  /** Why the migration failed, in QEMU's words. */
  errorDesc?: string;
}

/** The migration capabilities QEMU 7.2 and 10.0 both have. */
export const MIGRATION_CAPABILITIES = [
  'xbzrle', 'rdma-pin-all', 'auto-converge', 'zero-blocks', 'events', 'postcopy-ram', 'x-colo',
  'release-ram', 'return-path', 'pause-before-switchover', 'multifd', 'dirty-bitmaps',
  'postcopy-blocktime', 'late-block-activate', 'x-ignore-shared', 'validate-uuid',
  'background-snapshot', 'zero-copy-send', 'postcopy-preempt',
] as const;
export type MigrationCapability = (typeof MIGRATION_CAPABILITIES)[number];

/** The migration parameters ferry sets; each maps to the QEMU parameter named beside it. */
export interface MigrationParameters {
  /** `max-bandwidth`, bytes a second (QEMU's default is 128 MiB/s). */
  maxBandwidth?: number;
  /** `downtime-limit`, milliseconds. */
  downtimeLimitMs?: number;
  /** `multifd-channels`: connections besides the main one when `multifd` is on. */
  multifdChannels?: number;
}

const PARAMETER_NAMES: Record<keyof MigrationParameters, string> = {
  maxBandwidth: 'max-bandwidth',
  downtimeLimitMs: 'downtime-limit',
  multifdChannels: 'multifd-channels',
};

export interface MachineType {
  name: string;
  /** A short name for this type, e.g. `pc` for the newest `pc-i440fx-*`. */
  alias?: string;
  isDefault: boolean;
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

  private constructor(private readonly socket: net.Socket, maxLineBytes: number) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.lines = new LineSplitter(maxLineBytes, (line) => this.onLine(line), (reason) => this.fail(reason));
    socket.on('data', (chunk: Buffer) => this.lines.feed(chunk));
    // A reset is how a killed QEMU's end of the socket usually looks.
    socket.on('error', (err) => this.fail(`${/^(ECONNRESET|EPIPE)$/.test(errnoOf(err)) ? 'QEMU closed the QMP connection' : 'the QMP connection failed'} (${errnoOf(err)})`));
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
    const deadline = Date.now() + timeoutMs;
    const client = new QmpClient(await openSocket(socketPath, deadline, timeoutMs), options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES);
    const left = (): number => Math.max(1, deadline - Date.now());
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

  async queryStatus(): Promise<VmStatus> {
    const r = Fields.of('query-status', await this.execute('query-status'));
    return { status: r.string('status'), running: r.boolean('running') };
  }

  async queryVersion(): Promise<QemuVersion> {
    return readVersion('query-version', Fields.of('query-version', await this.execute('query-version')));
  }

  async queryMigrate(): Promise<MigrationInfo> {
    const r = Fields.of('query-migrate', await this.execute('query-migrate'));
    const ram = r.optionalObject('ram');
    return dropUndefined({
      status: r.optionalString('status') ?? 'none',
      ram: ram && {
        transferred: ram.integer('transferred'),
        remaining: ram.integer('remaining'),
        total: ram.integer('total'),
        duplicate: ram.integer('duplicate'),
        normal: ram.integer('normal'),
        normalBytes: ram.integer('normal-bytes'),
        dirtySyncCount: ram.integer('dirty-sync-count'),
        mbps: ram.number('mbps'),
        dirtyPagesRate: ram.integer('dirty-pages-rate'),
        pagesPerSecond: ram.integer('pages-per-second'),
        pageSize: ram.integer('page-size'),
        multifdBytes: ram.integer('multifd-bytes'),
        precopyBytes: ram.integer('precopy-bytes'),
        downtimeBytes: ram.integer('downtime-bytes'),
        postcopyBytes: ram.integer('postcopy-bytes'),
      },
      totalTimeMs: r.optionalInteger('total-time'),
      downtimeMs: r.optionalInteger('downtime'),
      expectedDowntimeMs: r.optionalInteger('expected-downtime'),
      setupTimeMs: r.optionalInteger('setup-time'),
      cpuThrottlePercentage: r.optionalInteger('cpu-throttle-percentage'),
      errorDesc: r.optionalString('error-desc'),
    });
  }

  async queryMigrateParameters(): Promise<MigrationParameters> {
    const r = Fields.of('query-migrate-parameters', await this.execute('query-migrate-parameters'));
    return dropUndefined({
      maxBandwidth: r.optionalInteger('max-bandwidth'),
      downtimeLimitMs: r.optionalInteger('downtime-limit'),
      multifdChannels: r.optionalInteger('multifd-channels'),
    });
  }

  async queryMachines(): Promise<MachineType[]> {
    const list = await this.execute('query-machines');
    if (!Array.isArray(list)) throw malformed('query-machines', 'the answer is not a list');
    return list.map((item, i) => {
      const m = Fields.of('query-machines', item, `[${i}].`);
      return dropUndefined({ name: m.string('name'), alias: m.optionalString('alias'), isDefault: m.optionalBoolean('is-default') ?? false });
    });
  }

  async migrateSetCapabilities(capabilities: Partial<Record<MigrationCapability, boolean>>): Promise<void> {
    const list = Object.entries(capabilities).map(([capability, state]) => {
      if (!(MIGRATION_CAPABILITIES as readonly string[]).includes(capability) || typeof state !== 'boolean') {
        throw new QmpError('ERR_FERRY_INPUT', `migrate-set-capabilities: ${JSON.stringify(capability)} is not a known capability set to true or false`, { command: 'migrate-set-capabilities' });
      }
      return { capability, state };
    });
    await this.void('migrate-set-capabilities', { capabilities: list });
  }

  async migrateSetParameters(parameters: MigrationParameters): Promise<void> {
    const args: Record<string, number> = {};
    for (const [key, value] of Object.entries(parameters)) {
      const name = PARAMETER_NAMES[key as keyof MigrationParameters];
      if (!name || !Number.isSafeInteger(value) || value < 0) {
        throw new QmpError('ERR_FERRY_INPUT', `migrate-set-parameters: ${JSON.stringify(key)} is not a known parameter with a whole number`, { command: 'migrate-set-parameters' });
      }
      args[name] = value;
    }
    await this.void('migrate-set-parameters', args);
  }

  /** Starts an outgoing migration to `uri` (e.g. `unix:/path`); QEMU answers at once and carries on. */
  async migrate(uri: string): Promise<void> {
    return this.void('migrate', { uri: checkUri('migrate', uri) });
  }

  /**
   * Starts listening for an incoming migration on a QEMU started with `-incoming defer`.
   * `exitOnError` exists from QEMU 9.1 on (its default there: true, QEMU exits when the incoming
   * migration fails); older QEMU refuses the argument, so it is only sent when given.
   */
  async migrateIncoming(uri: string, options: { exitOnError?: boolean } = {}): Promise<void> {
    const args: Record<string, unknown> = { uri: checkUri('migrate-incoming', uri) };
    if (options.exitOnError !== undefined) args['exit-on-error'] = options.exitOnError;
    return this.void('migrate-incoming', args);
  }

  /** Lets a migration paused in `state` (with `pause-before-switchover`: `pre-switchover`) go on. */
  async migrateContinue(state: string): Promise<void> {
    return this.void('migrate-continue', { state });
  }

  async migrateCancel(): Promise<void> {
    return this.void('migrate_cancel');
  }

  async cont(): Promise<void> {
    return this.void('cont');
  }

  async stop(): Promise<void> {
    return this.void('stop');
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
        this.greeted = parseGreeting(line);
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
    if (extra !== undefined) return this.fail(`QEMU sent an answer with a member QMP does not define (${quote(extra)})`);
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
    pending.reject(new QmpError('ERR_FERRY_QEMU', `QEMU refused ${pending.command}: ${printable(error.desc)} (${printable(error.class)})`, { command: pending.command, qmpClass: printable(error.class) }));
  }

  private onEventMessage(message: Record<string, unknown>): void {
    const extra = Object.keys(message).find((k) => k !== 'event' && k !== 'data' && k !== 'timestamp');
    const ts = isPlainObject(message.timestamp) ? message.timestamp : null;
    if (extra !== undefined || typeof message.event !== 'string' || (message.data !== undefined && !isPlainObject(message.data))
      || !ts || !Number.isSafeInteger(ts.seconds) || !Number.isSafeInteger(ts.microseconds)) {
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
    return new QmpError('ERR_FERRY_QEMU', `${what}: ${reason}`, { command: what.startsWith('waiting') ? undefined : what, cause: this.failure });
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

  constructor(private readonly maxLineBytes: number, private readonly onLine: (line: string) => void, private readonly onError: (reason: string) => void) {}

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
    if (!retry) throw new QmpError('ERR_FERRY_QEMU', `cannot connect to QEMU's QMP socket ${socketPath} (${errnoOf(outcome)})`, { cause: outcome });
    if (Date.now() + CONNECT_RETRY_MS > deadline) {
      throw new QmpError('ERR_FERRY_TIMEOUT', `QEMU's QMP socket ${socketPath} did not accept a connection within ${timeoutMs} ms (${errnoOf(outcome)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, CONNECT_RETRY_MS));
  }
}

/** `{"QMP": {"version": {...}, "capabilities": [...]}}`, nothing else (QMP forbids changing it). */
function parseGreeting(line: string): QemuVersion {
  let message: unknown;
  try {
    message = JSON.parse(line);
  } catch {
    throw new QmpError('ERR_FERRY_QEMU', 'the peer is not QEMU: its greeting is not JSON');
  }
  if (!isPlainObject(message) || Object.keys(message).join() !== 'QMP') {
    throw new QmpError('ERR_FERRY_QEMU', 'the peer is not QEMU: its first line is not a QMP greeting');
  }
  const qmp = Fields.of('the QMP greeting', message.QMP, 'QMP.');
  qmp.onlyMembers(['version', 'capabilities']);
  const capabilities = qmp.value.capabilities;
  if (!Array.isArray(capabilities) || !capabilities.every((c) => typeof c === 'string')) {
    throw malformed('the QMP greeting', 'QMP.capabilities is not a list of names');
  }
  return readVersion('the QMP greeting', qmp.object('version'));
}

function readVersion(what: string, r: Fields): QemuVersion {
  const qemu = r.object('qemu');
  return { major: qemu.integer('major'), minor: qemu.integer('minor'), micro: qemu.integer('micro'), package: r.string('package') };
}

/**
 * The members of one object in an answer, each read with its expected type; the first that is
 * missing or mistyped refuses the whole answer, naming the member (never quoting QEMU's values).
 */
class Fields {
  private constructor(private readonly what: string, readonly value: Record<string, unknown>, private readonly path: string) {}

  static of(what: string, value: unknown, path = ''): Fields {
    if (!isPlainObject(value)) throw malformed(what, path ? `${path.replace(/\.$/, '')} is not an object` : 'the answer is not an object');
    return new Fields(what, value, path);
  }

  string(key: string): string {
    return this.required(key, this.optionalString(key));
  }

  optionalString(key: string): string | undefined {
    return this.read(key, 'a string', (v) => typeof v === 'string') as string | undefined;
  }

  boolean(key: string): boolean {
    return this.required(key, this.optionalBoolean(key));
  }

  optionalBoolean(key: string): boolean | undefined {
    return this.read(key, 'true or false', (v) => typeof v === 'boolean') as boolean | undefined;
  }

  /** A whole number; QEMU's 64-bit counters are refused past 2^53 rather than rounded. */
  integer(key: string): number {
    return this.required(key, this.optionalInteger(key));
  }

  optionalInteger(key: string): number | undefined {
    return this.read(key, 'a whole number', (v) => Number.isSafeInteger(v)) as number | undefined;
  }

  number(key: string): number {
    return this.required(key, this.read(key, 'a number', (v) => typeof v === 'number' && Number.isFinite(v)) as number | undefined);
  }

  object(key: string): Fields {
    return this.required(key, this.optionalObject(key));
  }

  optionalObject(key: string): Fields | undefined {
    const v = this.value[key];
    return v === undefined ? undefined : Fields.of(this.what, v, `${this.path}${key}.`);
  }

  onlyMembers(allowed: string[]): void {
    const extra = Object.keys(this.value).find((k) => !allowed.includes(k));
    if (extra !== undefined) throw malformed(this.what, `${this.path}${quote(extra)} is not a member it may have`);
  }

  private read(key: string, type: string, ok: (v: unknown) => boolean): unknown {
    const v = this.value[key];
    if (v !== undefined && !ok(v)) throw malformed(this.what, `${this.path}${key} is not ${type}`);
    return v;
  }

  private required<T>(key: string, v: T | undefined): T {
    if (v === undefined) throw malformed(this.what, `${this.path}${key} is missing`);
    return v;
  }
}

function malformed(what: string, detail: string): QmpError {
  const command = what.startsWith('the ') ? undefined : what;
  return new QmpError('ERR_FERRY_QEMU', `QEMU answered ${what} with something malformed: ${detail}`, { command });
}

/** Commands without data answer `{}`; anything else is not the QEMU this client knows. */
function expectEmpty(command: string, value: unknown): void {
  if (!isPlainObject(value)) throw malformed(command, 'the answer is not an object');
  const extra = Object.keys(value)[0];
  if (extra !== undefined) throw malformed(command, `${quote(extra)} in an answer that has no members`);
}

function checkUri(command: string, uri: string): string {
  if (typeof uri !== 'string' || uri === '') throw new QmpError('ERR_FERRY_INPUT', `${command} needs a migration URI`, { command });
  return uri;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function dropUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/** Text from QEMU, made safe to put in a message: printable ASCII only, and not too long. */
function printable(text: string, max = 200): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}

/** A member name from the peer, quoted and cut short. */
function quote(name: string): string {
  return JSON.stringify(printable(name, 40));
}

function errnoOf(err: Error): string {
  return (err as NodeJS.ErrnoException).code ?? printable(err.message);
}
