/**
 * The qemu engine's messages over the channel (docs/migration.md, "QEMU guests"). QEMU's own
 * migration connections travel as the channel's byte streams (src/channel/streams.ts, types
 * 200-203); these are the rest: the setup, the boot files, and the hand-off.
 *
 *   source → destination   BEGIN (JSON)        the guest's config and the stream window
 *                          FILE (binary)       u8 file index, then bytes of that boot file, in order
 *                          SOURCE_DONE (JSON)  the source QEMU completed and is paused; its figures
 *   destination → source   READY (JSON)        its QEMU runs paused, waiting for the streams
 *                          COMMITTED (JSON)    it recorded ownership and runs the guest
 *   either way             ABORT (JSON)        this side gives up; from the destination also "not
 *                                               committed, never will be", sent once its QEMU is gone
 */
import { FerryError } from '../../errors.js';
import { bool, int, obj, oneOf, optional, str, type Check } from '../../common/validate.js';

export const QEMU_ENGINE_VERSION = 1;

export const QMSG = { BEGIN: 1, FILE: 2, READY: 3, SOURCE_DONE: 4, COMMITTED: 5, ABORT: 6 } as const;

/** Boot file bytes in one FILE message at most. */
export const FILE_CHUNK_BYTES = 1 << 20;
/** JSON messages are small; anything larger is refused before parsing. */
export const MAX_JSON_BYTES = 256 * 1024;

export interface Begin {
  engine: 'qemu';
  version: number;
  /** The guest's config as the source runs it (the destination's agent has it from the coordinator too: they must agree). */
  config: unknown;
  /** Each byte stream's credit window. */
  windowBytes: number;
  /** QEMU's multifd channels (0: none, one main connection). */
  multifdChannels: number;
  /** The source will send its RAM digest in SOURCE_DONE (--verify). */
  verify: boolean;
}

export const checkBegin: Check<Begin> = obj({
  engine: oneOf(['qemu'] as const),
  version: int({ min: 1, max: 1000 }),
  config: (v) => v,
  windowBytes: int({ min: 1, max: 2 ** 31 }),
  multifdChannels: int({ min: 0, max: 255 }),
  verify: bool,
});

export interface SourceDone {
  /** QEMU's own figures of the migration. */
  totalMs: number;
  downtimeMs: number | null;
  /** SHA-256 of guest RAM as the source left it (verify), else null. */
  digest: string | null;
}

const ramDigest: Check<string | null> = (v, f) => (v === null ? null : str({ pattern: /^[0-9a-f]{64}$/ })(v, f));

export const checkSourceDone: Check<SourceDone> = obj({
  totalMs: int({ min: 0 }),
  downtimeMs: (v, f) => (v === null ? null : int({ min: 0 })(v, f)),
  digest: ramDigest,
});

export interface Ready {
  qemuVersion: string;
}
export const checkReady: Check<Ready> = obj({ qemuVersion: str({ max: 100 }) });

export interface Abort {
  code: string;
  message: string;
}
export const checkAbort: Check<Abort> = obj({ code: str({ max: 64 }), message: str({ max: 2000 }) });

export interface Committed {
  downtimeMs?: number;
  /** SHA-256 of guest RAM as the destination loaded it (verify), else null: the source reports it beside its own. */
  digest?: string | null;
}
export const checkCommitted: Check<Committed> = obj({ downtimeMs: optional(int({ min: 0 })), digest: optional(ramDigest) });

export function encode(body: object): Buffer {
  return Buffer.from(JSON.stringify(body));
}

/** A JSON message's body, checked; a malformed one is ERR_FERRY_FRAME (the peer broke the protocol). */
export function decode<T>(type: number, payload: Uint8Array, check: Check<T>): T {
  if (payload.length > MAX_JSON_BYTES) throw new FerryError('ERR_FERRY_FRAME', `message ${type} of ${payload.length} bytes is too large`);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch {
    throw new FerryError('ERR_FERRY_FRAME', `message ${type} is not JSON`);
  }
  try {
    return check(value, `message ${type}`);
  } catch (err) {
    throw new FerryError('ERR_FERRY_FRAME', (err as Error).message);
  }
}
