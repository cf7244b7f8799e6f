/**
 * The control API between the coordinator (the ferry CLI) and a host agent, and between agents:
 * JSON lines over mutual TLS 1.3. Shared by both sides (the js-libp2p-daemon rule): the message
 * types, the checks that turn untrusted JSON into them, and the limits. docs/operations.md has the
 * prose version.
 *
 * A connection starts with `hello` (the version check); then any number of requests, each with an
 * id unique among those in flight, answered in any order:
 *
 *   -> {"id":1,"method":"guest.list","params":{}}
 *   <- {"id":1,"event":{...}}                      zero or more, for streaming methods
 *   <- {"id":1,"ok":true,"result":{...}}           or {"id":1,"ok":false,"error":{"code","message"}}
 *
 * A line that is not JSON, or not a request, gets {"id":null,"ok":false,"error":...}; a line over
 * MAX_REQUEST_BYTES gets the same and the connection is closed (there is no telling where the next
 * request starts).
 *
 * The two requests that carry a migration's key (KEYED_METHODS) carry it as a secret trailer
 * (src/common/json-lines.ts), never in JSON: `{"id":2,"method":"migration.prepare-incoming","params":{...},
 * "secretBytes":40}`, newline, then the 32-byte key and 8-byte nonce as raw bytes. The handler gets
 * them as Buffers (ChannelKey), which the server zeroes once the handler has settled.
 */
import type { EncryptedMigration, GuestConfig, GuestCreateRequest, GuestState } from '../guest/types.js';
import type { DriverAvailability } from '../guest/driver.js';
import { checkCreateRequest, checkGuestConfig } from '../guest/config.js';
import type { ChannelMode } from '../channel/types.js';
import type { ChannelParams, MigrationEvent, MigrationOutcome, MigrationResult, OutgoingSpec } from '../migration/types.js';
import { FerryError } from '../errors.js';
import { GUEST_NAME, GUEST_NAME_RULE, HOST_NAME, MIGRATION_ID, MIGRATION_ID_RULE } from '../common/names.js';
import { KEY_BYTES, NONCE_BYTES, SECRET_BYTES } from '../common/secrets.js';
import { addressProblem } from '../common/address.js';
import { absent, array, bool, int, obj, oneOf, optional, str, type Check } from '../common/validate.js';
import type { LineLimits } from '../common/json-lines.js';

/** Bumped on any incompatible change; an agent refuses clients older than MIN_PROTOCOL_VERSION. */
export const PROTOCOL_VERSION = 3;
export const MIN_PROTOCOL_VERSION = 1;
/**
 * The protocol from which keys travel only as secret trailers (1 had them in JSON, in base64).
 * Older peers may still connect for everything else (a rolling upgrade keeps its resolve queries);
 * the client refuses to send a key to an older agent, and the agent refuses a key in JSON.
 */
export const KEY_TRAILER_PROTOCOL = 2;
/** The protocol from which prepare-incoming takes the guest's `generation` (an older agent refuses the unknown field). */
export const GENERATION_PROTOCOL = 3;

/** One request line, JSON included. Requests are small; guest memory never crosses the control API. */
export const MAX_REQUEST_BYTES = 256 * 1024;
/** One response or event line, as the client accepts it. */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
/** The agent's framing of requests: a larger announced trailer closes the connection (see json-lines.ts). */
export const REQUEST_LINES: LineLimits = { maxLineBytes: MAX_REQUEST_BYTES, maxSecretBytes: 64 };
/** The client's framing of replies: no trailers (`secretBytes` in a reply is just a field). */
export const RESPONSE_LINES: LineLimits = { maxLineBytes: MAX_RESPONSE_BYTES, maxSecretBytes: 0 };
/** Time a new connection has to complete the TLS handshake and say hello. */
export const HELLO_TIMEOUT_MS = 10_000;
/** Default time limit of one request; each handler may set its own. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Requests in flight on one connection. */
export const MAX_IN_FLIGHT = 64;

export type Role = 'coordinator' | 'host';

export interface Peer {
  role: Role;
  /** The certificate's common name: a host name, or "ferry coordinator". */
  name: string;
}

// ---- messages -------------------------------------------------------------------------------

export interface HelloParams {
  protocol: number;
  /** Free text for logs, e.g. "ferry-cli 0.1.0". */
  client: string;
}
export interface HelloResult {
  protocol: number;
  minProtocol: number;
  agentVersion: string;
  host: string;
}

export interface Limits {
  /** Outgoing migrations run at once; the rest wait in a FIFO queue. */
  outgoing: number;
  incoming: number;
  /**
   * Threads all of this host's migrations together may seal and open on; each running migration
   * gets an equal share of them (cryptoThreadsPerMigration). Absent: every core for each migration.
   */
  cryptoThreads?: number;
}

export interface Capabilities {
  host: string;
  agentVersion: string;
  protocol: number;
  /** False for `ferry host serve --no-encryption` (standing in for an older host). */
  encrypts: boolean;
  cryptoBackend: string;
  /** CPU features that matter for AES-GCM: aes, pclmulqdq, avx2, vaes, vpclmulqdq, avx512f. */
  cpuFeatures: string[];
  /** Migration networks, preference order, as this agent listens on them. */
  networks: { listen: string; advertise: string }[];
  freeMemoryBytes: number;
  totalMemoryBytes: number;
  /** Memory this host keeps from guests (admission.ts); absent from agents before it, which keep the default. */
  memoryReserveBytes?: number;
  /** A passthrough-class NIC: guests with `nic: sriov` keep it when they land here. */
  hasSriov: boolean;
  limits: Limits;
  /** The threads each migration here seals or opens on (its share of limits.cryptoThreads); null: every core. */
  cryptoThreadsPerMigration: number | null;
  running: { outgoing: number; incoming: number };
  queued: { outgoing: number; incoming: number };
  /** Whether this host can run QEMU guests (drivers.qemu.available; before drivers: whether QEMU was on PATH). */
  qemu: boolean;
  /** Each guest driver: whether this host runs its guests, and with what ("QEMU 7.2.22, TCG"); absent from agents before drivers. */
  drivers?: Record<string, DriverAvailability>;
  guests: number;
}

/** A guest as `vm list` shows it: its config, where it is, and how it runs. */
export type GuestInfo = GuestConfig & GuestPlace;

/** Where a guest is and how it runs, beside its config. */
export interface GuestPlace {
  host: string;
  /**
   * The guest process's own state; `unknown` when its process did not answer the agent in time
   * (busy, or exiting: after a hand-off the process goes once the source has recorded it).
   */
  state: GuestState | 'unknown';
  /** The guest process, when it runs. */
  pid: number | null;
  opsPerSecond: number | null;
  /** False while the workload is still setting up (the idle fill, the kv preload); null when unknown. */
  workloadReady: boolean | null;
  /**
   * How many times the guest had moved when this host took it (0: created here). A copy with a
   * lower generation than another host's is stale (docs/operations.md, "A state directory restored
   * from a backup"). Absent from older agents.
   */
  generation?: number;
}

/** `guest.console`'s params: where to start in the log (default its beginning), and whether to keep following it. */
export interface ConsoleParams {
  name: string;
  /** A byte offset into the guest's console log on this host, as an earlier event or result gave it. */
  offset?: number;
  /** Keep streaming what the guest writes until the client goes away or the guest leaves this host. */
  follow?: boolean;
}

/** One piece of the console, as the guest wrote it (whole UTF-8 characters). */
export interface ConsoleEvent {
  type: 'console';
  text: string;
  /** The offset after this text: where a later call picks up. */
  offset: number;
}

export interface ConsoleResult {
  name: string;
  host: string;
  /** Where the log was read up to. */
  offset: number;
  /**
   * end: the end of the log as it was when asked (not following). stopped: the guest process here
   * went (stopped, destroyed, or the guest moved to another host), so there is no more to follow here.
   */
  reason: 'end' | 'stopped';
}

/** One bounded seal measurement (crypto.measure): 1 MiB frames on one thread, about 200 ms. */
export interface SealMeasurement {
  backend: string;
  frameBytes: number;
  bytes: number;
  ms: number;
  sealGBps: number;
}

export type ResolveDecision = 'committed' | 'not-committed';

/**
 * The channel half of a migration spec, as both agents receive it from the coordinator: the
 * engine's ChannelParams without key and nonce (those come as the request's secret trailer, see
 * ChannelKey). No cryptoThreads: that is each host's own limit, which the coordinator cannot raise.
 */
export type WireChannelSpec = Omit<ChannelParams, 'key' | 'nonce' | 'cryptoThreads'>;

/**
 * A migration's key (32 bytes) and nonce (8 bytes) as a keyed handler gets them: views into the
 * request's secret trailer, never a string. Only in memory, never logged or written; the server
 * zeroes them once the handler has settled, and the handler may do so sooner.
 */
export interface ChannelKey {
  key: Buffer;
  nonce: Buffer;
}

/** To the destination, first: receive guest `guest.name` from host `source`. */
export interface PrepareIncomingParams extends WireChannelSpec {
  guest: GuestConfig;
  source: string;
  /**
   * Give the incoming guest up (not committed) when no data has arrived this long after it was
   * prepared: a coordinator that died between the two requests must not hold a slot for ever.
   * Default 30 minutes.
   */
  startTimeoutMs?: number;
  /**
   * The source agent's control address, when this agent can ask it (same cluster): a restarted
   * destination that finds a commit recorded but not yet run asks the source first whether the
   * operator settled the migration without it (`migration.claim`, docs/migration.md, "When the
   * destination is lost for good").
   */
  sourceControl?: string;
  /** The guest's generation once it lands here: the source's plus one (GuestPlace.generation). Absent from older coordinators: 0. */
  generation?: number;
}

export interface PrepareIncomingResult {
  migrationId: string;
  /** The migration addresses this agent listens on (the coordinator hands the source the cluster file's advertised ones). */
  networks: string[];
  /** The guest asked for a passthrough-class NIC this host lacks: it gets the emulated one here. */
  nicFallback: boolean;
  /** The config the guest will run with here. */
  guest: GuestConfig;
}

/**
 * To the source, once the destination is prepared: send guest `guest` to `destination`.
 * `networks`: the destination's migration addresses, in preference order (the cluster file's `advertise`).
 */
export interface StartOutgoingParams
  extends
    WireChannelSpec,
    Pick<OutgoingSpec, 'networks' | 'maxDowntimeMs' | 'timeoutMs' | 'autoConverge' | 'verify' | 'commitTimeoutMs' | 'removeSourceDisks'> {
  guest: string;
  /** Who to ask for the decision when the channel is lost before COMMITTED. */
  destination: { host: string; control: string };
}

/** Events of a start-outgoing call (and `queued` of prepare-incoming). */
export type MigrationStreamEvent =
  | { type: 'queued'; position: number }
  | { type: 'started' }
  | MigrationEvent
  /** In doubt: the source asks the destination's agent what it decided. */
  | { type: 'resolving'; attempt: number; error: string | null }
  | { type: 'resolved'; decision: ResolveDecision };

export interface StartOutgoingResult {
  migrationId: string;
  /** committed: the guest runs on the destination now; aborted: it runs here; in-doubt: paused here until resolved. */
  outcome: MigrationOutcome;
  result: MigrationResult | null;
}

/** What `migration.cancel` answers once the cancelled migration has ended. */
export interface CancelResult {
  migrationId: string;
  guest: string;
  /** The destination host it was going to. */
  to: string;
  /** aborted: the guest runs on this host, the destination told to drop its copy. */
  outcome: MigrationOutcome;
  /** The engine's result; null when the migration never left the queue. */
  result: MigrationResult | null;
}

/** A source migration paused in doubt, and the destination it went to. */
export interface WaitingMigration {
  migrationId: string;
  guest: string;
  destination: { host: string; control: string };
}

/** Source: the outgoing migration of a guest that has not ended (`migration.outgoing`). */
export interface OutgoingMigrationInfo {
  migrationId: string;
  guest: string;
  destination: { host: string; control: string };
  phase: MigrationStatus['phase'];
}

export interface MigrationStatus {
  migrationId: string;
  role: 'source' | 'destination';
  guest: string;
  phase: 'queued' | 'running' | 'ready-to-commit' | 'committed' | 'aborted' | 'in-doubt';
  /** Place in this host's queue while queued. */
  position: number | null;
  lastEvent: MigrationEvent | null;
  result: MigrationResult | null;
}

/**
 * One host's view of a migration it takes part in that has not ended (`migration.list`): what
 * `ferry migrations` shows, merged by id with the other side's view. Figures this side cannot know
 * are null: the source has the engine's progress, the destination what arrived and on which network.
 */
export interface MigrationJob {
  migrationId: string;
  role: 'source' | 'destination';
  guest: string;
  /** The host answering, and the other end: where the guest goes (source) or comes from (destination). */
  host: string;
  peer: string;
  /** MigrationStatus's phases; `switch-over` once the source's engine has decided to switch over. */
  phase: MigrationStatus['phase'] | 'switch-over';
  /** Place in this host's queue (1: next) while queued; null otherwise. */
  position: number | null;
  /** When this agent got the request (or took the migration over after a restart), ms since the epoch. */
  since: number;
  /** Null for a migration a restarted agent took over (its spec went to the guest process only). */
  mode: ChannelMode | null;
  maxBytesPerSecond: number | null;
  /** Source: the engine's last progress report (at most a second old while a pass runs); null before the first. */
  pass: number | null;
  bytesSent: number | null;
  /** What the current pass has still to send, or (between passes) what the guest dirtied meanwhile. */
  bytesLeft: number | null;
  /** Bytes a second: the link as the engine measures it, and the guest's dirtying. */
  rate: number | null;
  dirtyRate: number | null;
  throttlePercent: number | null;
  /** bytesLeft over (rate - dirtyRate); null while the guest dirties as fast as the link drains, or before the first report. */
  etaMs: number | null;
  /** The source's estimate of the pause, once it has decided to switch over. */
  expectedDowntimeMs: number | null;
  /** Destination: payload bytes received by the end of the last pass. */
  bytesReceived: number | null;
  /** Destination: its address the data connections arrived on, the latest one's (before their HELLO was checked). */
  network: string | null;
  /** Destination: times a data connection arrived on another network than the one before. */
  failovers: number;
}

export interface MigrationList {
  host: string;
  migrations: MigrationJob[];
}

/** Every method: its parameters, result, and the events a streaming call sends before its result. */
export interface Methods {
  hello: { params: HelloParams; result: HelloResult; event: never };
  capabilities: { params: Record<string, never>; result: Capabilities; event: never };
  /** `config`: a create request (a synthetic guest's config as is; a QEMU guest's before its host chose accelerator, uuid and boot files). */
  'guest.create': { params: { config: GuestCreateRequest }; result: GuestInfo; event: never };
  'guest.list': { params: Record<string, never>; result: { guests: GuestInfo[] }; event: never };
  'guest.get': { params: { name: string }; result: GuestInfo; event: never };
  'guest.set': { params: { name: string; encryptedMigration: EncryptedMigration }; result: GuestInfo; event: never };
  'guest.destroy': { params: { name: string }; result: { name: string }; event: never };
  /** The guest's serial console log, in events of bounded chunks; with `follow`, what it writes from then on too. */
  'guest.console': { params: ConsoleParams; result: ConsoleResult; event: ConsoleEvent };
  /**
   * The destination's commit decision for a migration, asked by the source when it lost the
   * channel before COMMITTED. Answering "not-committed" records that answer durably: a later
   * commit of that migration is refused, so the answer can never turn out wrong.
   */
  'migration.resolve': { params: { migrationId: string }; result: { migrationId: string; decision: ResolveDecision }; event: never };
  /** Destination: start an incoming guest process for the migration (after a free incoming slot). */
  'migration.prepare-incoming': {
    params: PrepareIncomingParams;
    result: PrepareIncomingResult;
    event: { type: 'queued'; position: number };
  };
  /** Source: run the migration (after a free outgoing slot); streams progress until it settles. */
  'migration.start-outgoing': { params: StartOutgoingParams; result: StartOutgoingResult; event: MigrationStreamEvent };
  'migration.status': { params: { migrationId: string }; result: MigrationStatus; event: never };
  /** Every migration of this host that has not ended, queued ones included (`ferry migrations`). */
  'migration.list': { params: Record<string, never>; result: MigrationList; event: never };
  /** Seals throwaway data under a throwaway key for a bounded time: what `ferry probe` reports as seal GB/s. */
  'crypto.measure': { params: Record<string, never>; result: SealMeasurement; event: never };
  /**
   * Source, in doubt and unable to ask the destination's agent itself (a host of another cluster,
   * whose CA does not admit this host): the coordinator asked it (`migration.resolve`, with that
   * cluster's credentials) and relays its answer here.
   */
  'migration.settle': {
    params: { migrationId: string; decision: ResolveDecision };
    result: { migrationId: string; decision: ResolveDecision };
    event: never;
  };
  /** Source: the migration of a guest that waits in doubt (for `ferry resolve`, which then asks its destination and settles it). */
  'migration.waiting': { params: { guest: string }; result: WaitingMigration; event: never };
  /** Source: guest `guest`'s outgoing migration that has not ended yet (ERR_FERRY_NOT_FOUND when none). */
  'migration.outgoing': { params: { guest: string }; result: OutgoingMigrationInfo; event: never };
  /**
   * Source: follows outgoing migration `migrationId` to its end, with its events, as
   * start-outgoing would have (a coordinator that lost the connection that started it, or a
   * restarted agent that adopted it). ERR_FERRY_NOT_FOUND: no such migration runs or ran here
   * since this agent started.
   */
  'migration.follow': { params: { migrationId: string }; result: StartOutgoingResult; event: MigrationStreamEvent };
  /**
   * Source, in doubt, on the operator's word that the destination can no longer run the guest
   * (`ferry resolve VM --destination-lost`): recorded durably here as "not committed by operator
   * decision", then the guest resumes here. Refused when the destination has claimed its commit.
   */
  'migration.fence': { params: { migrationId: string }; result: { migrationId: string; decision: 'not-committed' }; event: never };
  /**
   * Source, told by a restarted destination agent what it decided for a migration its previous
   * agent left: "not-committed" reaches a source waiting in doubt at once (no need to wait for its
   * next resolve query); "committed", for a commit recorded but not run yet, is a claim: recorded
   * here (a fence is refused from then on) unless the operator fenced first. Answers the decision
   * that stands; the destination runs its copy only on "committed".
   */
  'migration.decided': {
    params: { migrationId: string; decision: ResolveDecision };
    result: { migrationId: string; decision: ResolveDecision };
    event: never;
  };
  /** Destination: the source's operator fenced migration `migrationId`: record it, and drop this host's copy. */
  'migration.fenced': { params: { migrationId: string }; result: { migrationId: string; dropped: boolean }; event: never };
  /**
   * Destination: give up an incoming migration that has not committed ("not committed", final).
   * Source: the same as `migration.cancel` of that migration (decision null).
   */
  'migration.abort': { params: { migrationId: string }; result: { migrationId: string; decision: ResolveDecision | null }; event: never };
  /**
   * Source: cancel the outgoing migration of guest `guest` (only that one when `migrationId` is
   * given): it leaves the queue, or its pre-copy stops, the guest running on here, and the
   * destination is told to drop its copy. Answers once the migration has ended. Refused
   * (ERR_FERRY_REFUSED) when there is none, or from the switch-over on, when the destination decides.
   */
  'migration.cancel': { params: { guest: string; migrationId?: string }; result: CancelResult; event: never };
}

export type Method = keyof Methods;
/** The methods that take a migration's key and nonce, as a secret trailer of exactly this many bytes. */
export const KEYED_METHODS = {
  'migration.prepare-incoming': SECRET_BYTES,
  'migration.start-outgoing': SECRET_BYTES,
} as const satisfies { [M in Method]?: number };
export type KeyedMethod = keyof typeof KEYED_METHODS;
export function isKeyed(method: string): method is KeyedMethod {
  return Object.prototype.hasOwnProperty.call(KEYED_METHODS, method);
}
/** What a handler of method M gets besides its params: the key for keyed methods, else nothing. */
export type KeyOf<M extends Method> = M extends KeyedMethod ? ChannelKey : null;
export type Params<M extends Method> = Methods[M]['params'];
export type Result<M extends Method> = Methods[M]['result'];
export type Event<M extends Method> = Methods[M]['event'];

// The envelope of requests and replies is src/common/rpc.ts's.

// ---- checks ---------------------------------------------------------------------------------

const guestName = str({ pattern: GUEST_NAME, describe: `a guest name (${GUEST_NAME_RULE})` });
const encryptedMigration = oneOf<EncryptedMigration>(['disabled', 'opportunistic', 'required']);
/** The guest driver's own check (src/guest/config.ts): one definition of a valid guest. */
const guestConfig: Check<GuestConfig> = (v) => checkGuestConfig(v);

const empty = obj({}) as Check<Record<string, never>>;

const migrationId = str({ pattern: MIGRATION_ID, describe: `a migration id (${MIGRATION_ID_RULE})` });
/** Protocol 1 sent key and nonce in JSON; now they are refused there, whatever they hold. */
const keyInJson = absent(
  `never goes in JSON: key and nonce travel only as the request's raw secret trailer (control protocol ${KEY_TRAILER_PROTOCOL}); upgrade ferry`,
);
const address: Check<string> = (v, field) => {
  const problem = addressProblem(v);
  if (problem) throw new FerryError('ERR_FERRY_INPUT', `${field}: ${problem}`);
  return v as string;
};
const channelFields = {
  migrationId,
  key: keyInJson,
  nonce: keyInJson,
  mode: oneOf<ChannelMode>(['encrypted', 'plain']),
  streams: int({ min: 1, max: 16 }),
  maxBytesPerSecond: optional(int({ min: 1 })),
};
const hostName = str({ pattern: HOST_NAME, describe: 'a host name' });
const millis = optional(int({ min: 1, max: 7 * 24 * 3_600_000 }));

/** The parameter check of every method: the agent runs it before any handler sees a request. */
export const PARAMS: { [M in Method]: Check<Params<M>> } = {
  hello: obj({ protocol: int({ min: 0, max: 1_000_000 }), client: str({ max: 200 }) }),
  capabilities: empty,
  'guest.create': obj({ config: (v) => checkCreateRequest(v, 'params.config') }),
  'guest.list': empty,
  'guest.get': obj({ name: guestName }),
  'guest.set': obj({ name: guestName, encryptedMigration }),
  'guest.destroy': obj({ name: guestName }),
  'guest.console': obj({ name: guestName, offset: optional(int({ min: 0, max: Number.MAX_SAFE_INTEGER })), follow: optional(bool) }),
  'migration.resolve': obj({ migrationId }),
  'migration.prepare-incoming': obj({
    ...channelFields,
    guest: guestConfig,
    source: hostName,
    startTimeoutMs: millis,
    sourceControl: optional(address),
    generation: optional(int({ min: 0, max: Number.MAX_SAFE_INTEGER })),
  }),
  'migration.start-outgoing': obj({
    ...channelFields,
    guest: guestName,
    destination: obj({ host: hostName, control: address }),
    networks: array(address, 16, 1),
    maxDowntimeMs: millis,
    timeoutMs: millis,
    autoConverge: optional(bool),
    verify: optional(bool),
    commitTimeoutMs: millis,
    removeSourceDisks: optional(bool),
  }),
  'migration.status': obj({ migrationId }),
  'migration.list': empty,
  'crypto.measure': empty,
  'migration.abort': obj({ migrationId }),
  'migration.cancel': obj({ guest: guestName, migrationId: optional(migrationId) }),
  'migration.settle': obj({ migrationId, decision: oneOf<ResolveDecision>(['committed', 'not-committed']) }),
  'migration.waiting': obj({ guest: guestName }),
  'migration.outgoing': obj({ guest: guestName }),
  'migration.follow': obj({ migrationId }),
  'migration.fence': obj({ migrationId }),
  'migration.decided': obj({ migrationId, decision: oneOf<ResolveDecision>(['committed', 'not-committed']) }),
  'migration.fenced': obj({ migrationId }),
};

/**
 * The key of a request (views into its secret trailer), or null for a method that takes none.
 * Throws ERR_FERRY_INPUT when a keyed method lacks a trailer of the right size, or another method
 * has one. The messages say sizes, never bytes.
 */
export function keyOf(method: Method, secret: Buffer | null): ChannelKey | null {
  if (!isKeyed(method)) {
    if (secret) throw new FerryError('ERR_FERRY_INPUT', `${method} takes no secret trailer (secretBytes)`);
    return null;
  }
  const bytes = KEYED_METHODS[method];
  if (!secret || secret.length !== bytes) {
    throw new FerryError(
      'ERR_FERRY_INPUT',
      `${method} takes the ${KEY_BYTES}-byte key and ${NONCE_BYTES}-byte nonce as a secret trailer of ${bytes} bytes (secretBytes: ${bytes}), ${secret ? `not ${secret.length}` : 'and got none'}`,
    );
  }
  return { key: secret.subarray(0, KEY_BYTES), nonce: secret.subarray(KEY_BYTES) };
}

export function isMethod(name: string): name is Method {
  return Object.prototype.hasOwnProperty.call(PARAMS, name);
}
