/**
 * What a channel is given: its spec, checked before anything else happens, and its options, with
 * their defaults.
 */
import { FerryError } from '../errors.js';
import { MAX_THREADS, type Backend } from '../crypto/backend.js';
import { KeySchedule } from '../crypto/key-schedule.js';
import type { ChannelFailover, ChannelSpec, PlacePayload } from './types.js';
import { KEY_BYTES, NONCE_BYTES } from '../common/secrets.js';
import { KEY_BUDGET_BYTES, MAX_WINDOW_BYTES, MIGRATION_ID, MIGRATION_ID_RULE, MIN_KEY_BUDGET_BYTES, MIN_WINDOW_BYTES } from './wire.js';

/**
 * Lowers the per-epoch key budget of every channel of a process, for end-to-end tests that need
 * many key epochs in a small move. It can only lower the budget (more key updates, never fewer),
 * so it cannot weaken a migration.
 */
export const KEY_BUDGET_ENV = 'FERRY_TEST_KEY_BUDGET_BYTES';

export interface ChannelOptions {
  /** The crypto backend; default: loadBackend(). */
  backend?: Backend;
  /** Bytes this side lets the peer have unacknowledged (announced in HELLO). Default 64 MiB. */
  windowBytes?: number;
  /** A connection must finish its HELLO exchange within this. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** A connection on which nothing arrived for this long is dead (failover). Default 15 s. */
  stallTimeoutMs?: number;
  /** Send an ACK on an idle connection this often, so the peer can tell it is alive. Default 1 s. */
  keepaliveMs?: number;
  /**
   * Destination: fail with ERR_FERRY_NETWORK after this long without any connection. Source, once
   * a connection has opened: keep redialing for this long after the last one was lost. Default 30 s.
   */
  reconnectTimeoutMs?: number;
  /** Source: a TCP connect must succeed within this. Default 5 s. */
  connectTimeoutMs?: number;
  /** Source: full rounds over every network, all failing, before ERR_FERRY_NETWORK. Default 2. */
  connectRounds?: number;
  /**
   * Source: the operator's cancel while the channel connects. connectChannel then rejects at once
   * with the signal's reason (a FerryError; otherwise ERR_FERRY_ABORTED) instead of waiting for its
   * connect attempts and HELLO exchanges to run out. Once connected the caller listens itself.
   */
  signal?: AbortSignal;
  /**
   * Plain mode: copies pairs (flat[2i+1] into flat[2i]) off the event loop — the addon's copyBatch,
   * memcpy on the libuv pool — for a batch of payloads to be copied into their frames: a DATA
   * message's pages come as views of guest memory, and V8's copy out of a SharedArrayBuffer is a
   * slow one on the calling thread. Default: the copy runs on the calling thread.
   */
  copy?: ((flat: Uint8Array[]) => Promise<void>) | null;
  /**
   * Bytes this side seals under one key epoch before it moves to the next (tests lower it to cross
   * many epochs); MIN_KEY_BUDGET_BYTES to KEY_BUDGET_BYTES, the default. KEY_BUDGET_ENV lowers it further.
   */
  keyBudgetBytes?: number;
  /** Source: told each time the channel moves to another migration network (it carries on there). */
  onFailover?: (failover: ChannelFailover) => void;
  /** Told about each incoming connection refused before it touched the channel (wrong key, mode, id). */
  onRejectedConnection?: (error: FerryError) => void;
  /**
   * The memory each DATA payload is opened into (plain mode: copied into), `length` bytes exactly;
   * default a fresh buffer (plain mode: a view of the received frame). The consumer owns it once
   * receive() returned it, so it can hand out recycled buffers (warm memory: a fresh one costs
   * page faults) or memory of its own.
   */
  allocatePayload?: (messageType: number, length: number) => Uint8Array;
  /**
   * Encrypted mode, destination: opens DATA messages straight into the consumer's memory (pages
   * into guest memory, with no copy after the open). See PlacePayload for what may be placed
   * where. A retransmitted message that already arrived is never placed: it is opened into its
   * own buffer and dropped, so a placed message is written exactly once.
   */
  placePayload?: PlacePayload | null;
}

export const DEFAULT_WINDOW_BYTES = 64 * 1024 * 1024;

/** The window and the timings, defaults filled in. */
export type ChannelSettings = Required<
  Pick<
    ChannelOptions,
    'windowBytes' | 'handshakeTimeoutMs' | 'stallTimeoutMs' | 'keepaliveMs' | 'reconnectTimeoutMs' | 'connectTimeoutMs' | 'connectRounds'
  >
>;

export function channelSettings(options: ChannelOptions): ChannelSettings {
  const windowBytes = options.windowBytes ?? DEFAULT_WINDOW_BYTES;
  keyBudget(options);
  if (!Number.isInteger(windowBytes) || windowBytes < MIN_WINDOW_BYTES || windowBytes > MAX_WINDOW_BYTES) {
    throw new FerryError('ERR_FERRY_INPUT', `windowBytes must be ${MIN_WINDOW_BYTES} to ${MAX_WINDOW_BYTES}`);
  }
  return {
    windowBytes,
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    stallTimeoutMs: options.stallTimeoutMs ?? 15_000,
    keepaliveMs: options.keepaliveMs ?? 1_000,
    reconnectTimeoutMs: options.reconnectTimeoutMs ?? 30_000,
    connectTimeoutMs: options.connectTimeoutMs ?? 5_000,
    connectRounds: options.connectRounds ?? 2,
  };
}

function checkBudget(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < MIN_KEY_BUDGET_BYTES || value > KEY_BUDGET_BYTES) {
    throw new FerryError('ERR_FERRY_INPUT', `${what} must be ${MIN_KEY_BUDGET_BYTES} to ${KEY_BUDGET_BYTES} bytes`);
  }
  return value;
}

/** The per-epoch key budget: the option's, lowered (never raised) by KEY_BUDGET_ENV. */
export function keyBudget(options: ChannelOptions): number {
  let budget = checkBudget(options.keyBudgetBytes ?? KEY_BUDGET_BYTES, 'keyBudgetBytes');
  const env = process.env[KEY_BUDGET_ENV];
  if (env !== undefined && env !== '') budget = Math.min(budget, checkBudget(Number(env), KEY_BUDGET_ENV));
  return budget;
}

function validateSpec(spec: ChannelSpec): void {
  const bad = (what: string): never => {
    throw new FerryError('ERR_FERRY_INPUT', `channel spec: ${what}`);
  };
  if (typeof spec.migrationId !== 'string' || !MIGRATION_ID.test(spec.migrationId)) bad(`migrationId must be ${MIGRATION_ID_RULE}`);
  if (spec.mode !== 'encrypted' && spec.mode !== 'plain') bad('mode must be "encrypted" or "plain"');
  if (spec.mode === 'encrypted' && (!(spec.key instanceof Uint8Array) || spec.key.length !== KEY_BYTES))
    bad(`key must be ${KEY_BYTES} bytes`);
  if (!(spec.nonce instanceof Uint8Array) || spec.nonce.length !== NONCE_BYTES) bad(`nonce must be ${NONCE_BYTES} bytes`);
  if (!Number.isInteger(spec.streams) || spec.streams < 1 || spec.streams > 16) bad('streams must be 1 to 16');
  if (spec.maxBytesPerSecond !== undefined && !(spec.maxBytesPerSecond > 0)) bad('maxBytesPerSecond must be positive');
  if (
    spec.cryptoThreads !== undefined &&
    !(Number.isInteger(spec.cryptoThreads) && spec.cryptoThreads >= 1 && spec.cryptoThreads <= MAX_THREADS)
  ) {
    bad(`cryptoThreads must be 1 to ${MAX_THREADS}`);
  }
}

/** Checks the spec and takes its key into a key schedule (once for the channel's life); null for a plain channel. */
export async function prepareKey(spec: ChannelSpec, options: ChannelOptions): Promise<KeySchedule | null> {
  validateSpec(spec);
  keyBudget(options);
  if (spec.mode !== 'encrypted') return null;
  const backend = options.backend ?? (await (await import('../crypto/index.js')).loadBackend());
  return KeySchedule.create(backend, spec.key, spec.nonce);
}
