/**
 * What QEMU's QMP answers look like, and the checks each goes through before ferry uses it: the
 * greeting, the answers of the commands the qemu driver runs, and the arguments it sends.
 *
 * A reader takes the members it needs, each checked for presence and type, and builds a fresh
 * object of ferry's own (camelCase, units in the names); members it does not know are ignored,
 * since the QMP specification lets every new QEMU add members to an answer and asks clients to
 * ignore them. The members read are those QEMU 7.2 and 10.0 both give. An error names the command
 * and the member, never QEMU's value.
 */
import { FerryError, type ErrorCode } from '../../errors.js';

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
  'xbzrle',
  'rdma-pin-all',
  'auto-converge',
  'zero-blocks',
  'events',
  'postcopy-ram',
  'x-colo',
  'release-ram',
  'return-path',
  'pause-before-switchover',
  'multifd',
  'dirty-bitmaps',
  'postcopy-blocktime',
  'late-block-activate',
  'x-ignore-shared',
  'validate-uuid',
  'background-snapshot',
  'zero-copy-send',
  'postcopy-preempt',
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

export function readVmStatus(value: unknown): VmStatus {
  const r = Fields.of('query-status', value);
  return { status: r.string('status'), running: r.boolean('running') };
}

export function readMigrationInfo(value: unknown): MigrationInfo {
  const r = Fields.of('query-migrate', value);
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

export function readMigrationParameters(value: unknown): MigrationParameters {
  const r = Fields.of('query-migrate-parameters', value);
  return dropUndefined({
    maxBandwidth: r.optionalInteger('max-bandwidth'),
    downtimeLimitMs: r.optionalInteger('downtime-limit'),
    multifdChannels: r.optionalInteger('multifd-channels'),
  });
}

export function readMachines(value: unknown): MachineType[] {
  if (!Array.isArray(value)) throw malformed('query-machines', 'the answer is not a list');
  return value.map((item, i) => {
    const m = Fields.of('query-machines', item, `[${i}].`);
    return dropUndefined({ name: m.string('name'), alias: m.optionalString('alias'), isDefault: m.optionalBoolean('is-default') ?? false });
  });
}

/** `migrate-set-capabilities`' argument; a name QEMU 7.2 or 10.0 lacks is refused before sending. */
export function capabilitiesArgument(capabilities: Partial<Record<MigrationCapability, boolean>>): {
  capabilities: { capability: string; state: boolean }[];
} {
  return {
    capabilities: Object.entries(capabilities).map(([capability, state]) => {
      if (!(MIGRATION_CAPABILITIES as readonly string[]).includes(capability) || typeof state !== 'boolean') {
        throw new QmpError(
          'ERR_FERRY_INPUT',
          `migrate-set-capabilities: ${quote(capability)} is not a known capability set to true or false`,
          { command: 'migrate-set-capabilities' },
        );
      }
      return { capability, state };
    }),
  };
}

/** `migrate-set-parameters`' argument, under QEMU's names. */
export function parametersArgument(parameters: MigrationParameters): Record<string, number> {
  const args: Record<string, number> = {};
  for (const [key, value] of Object.entries(parameters)) {
    const name = PARAMETER_NAMES[key as keyof MigrationParameters];
    if (!name || !Number.isSafeInteger(value) || value < 0) {
      throw new QmpError('ERR_FERRY_INPUT', `migrate-set-parameters: ${quote(key)} is not a known parameter with a whole number`, {
        command: 'migrate-set-parameters',
      });
    }
    args[name] = value;
  }
  return args;
}

/** `{"QMP": {"version": {...}, "capabilities": [...]}}`, nothing else (QMP forbids changing it). */
export function readGreeting(line: string): QemuVersion {
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
  return readVersion('the QMP greeting', qmp.value.version, 'QMP.version.');
}

export function readVersion(what: string, value: unknown, path = ''): QemuVersion {
  const r = Fields.of(what, value, path);
  const qemu = r.object('qemu');
  return { major: qemu.integer('major'), minor: qemu.integer('minor'), micro: qemu.integer('micro'), package: r.string('package') };
}

/**
 * The members of one object in an answer, each read with its expected type; the first that is
 * missing or mistyped refuses the whole answer, naming the member (never quoting QEMU's values).
 */
class Fields {
  private constructor(
    private readonly what: string,
    readonly value: Record<string, unknown>,
    private readonly path: string,
  ) {}

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

export function malformed(what: string, detail: string): QmpError {
  const command = what.startsWith('the ') ? undefined : what;
  return new QmpError('ERR_FERRY_QEMU', `QEMU answered ${what} with something malformed: ${detail}`, { command });
}

/** Commands without data answer `{}`; anything else is not the QEMU this client knows. */
export function expectEmpty(command: string, value: unknown): void {
  if (!isPlainObject(value)) throw malformed(command, 'the answer is not an object');
  const extra = Object.keys(value)[0];
  if (extra !== undefined) throw malformed(command, `${quote(extra)} in an answer that has no members`);
}

export function checkUri(command: string, uri: string): string {
  if (typeof uri !== 'string' || uri === '') throw new QmpError('ERR_FERRY_INPUT', `${command} needs a migration URI`, { command });
  return uri;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function dropUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/** Text from QEMU, made safe to put in a message: printable ASCII only, and not too long. */
export function printable(text: string, max = 200): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}

/** A member name from the peer, quoted and cut short. */
function quote(name: string): string {
  return JSON.stringify(printable(name, 40));
}
