/**
 * One error vocabulary for the whole of ferry. Every error that crosses a module boundary is a
 * FerryError with a stable `code`; the command line maps the code to an exit status, and the
 * control API sends `{code, message}` to the other side. Messages never contain key material.
 */

/** Exit status of the `ferry` command for each code: 2 bad usage or input, 1 the operation failed. */
export const ERROR_CODES = {
  /** A GCM tag did not verify: wrong key, tampered header, payload or tag, or a frame of another migration. */
  ERR_FERRY_AUTH: 1,
  /** A frame arrived out of sequence: replayed, reordered or dropped. */
  ERR_FERRY_SEQUENCE: 1,
  /** A frame or message that cannot be parsed: bad version, type, length or layout. */
  ERR_FERRY_FRAME: 1,
  /** Something did not happen within its time limit. */
  ERR_FERRY_TIMEOUT: 1,
  /** A connection could not be made or was lost, on every network there was. */
  ERR_FERRY_NETWORK: 1,
  /** A per-key data limit was reached: the channel refuses to seal more under this key. */
  ERR_FERRY_LIMIT: 1,
  /** The crypto backend cannot do what was asked (unsupported IV size, backend not loadable). */
  ERR_FERRY_CRYPTO: 1,
  /** The peer or the coordinator asked for something this side refuses (mode, version, certificate). */
  ERR_FERRY_REFUSED: 1,
  /** A migration was aborted (or cancelled by the operator); the guest keeps running on the source. */
  ERR_FERRY_ABORTED: 1,
  /** The command stopped following a migration (a second Ctrl-C), which carries on by itself. */
  ERR_FERRY_DETACHED: 1,
  /** QEMU failed to start, exited, refused a command, or answered something malformed. */
  ERR_FERRY_QEMU: 1,
  /** The named guest, host or file does not exist. */
  ERR_FERRY_NOT_FOUND: 2,
  /** Bad command-line usage: unknown command or flag, missing or malformed argument. */
  ERR_FERRY_USAGE: 2,
  /** Bad input: a malformed cluster file, size, duration or request. */
  ERR_FERRY_INPUT: 2,
  /** A bug: something that must not happen did. */
  ERR_FERRY_INTERNAL: 1,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * Facts about an error that code acts on, given as fields so that nothing parses them back out of
 * the message. One shape per kind of fact; never key material.
 */
export type ErrorDetail = Partial<BatchJobDetail & TrustDetail>;

/** A batch seal or open failed (src/crypto): which job, as its index in the jobs given. */
export interface BatchJobDetail {
  readonly jobIndex: number;
}

/** A TLS handshake failed on trust: their certificate is not of our CA ('theirs'), or they refused ours ('ours'). */
export interface TrustDetail {
  readonly untrusted: 'theirs' | 'ours';
}

export class FerryError extends Error {
  readonly code: ErrorCode;
  /** Set where the thrower knows more than the code (which batch job failed, say). */
  readonly detail?: ErrorDetail;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; detail?: ErrorDetail }) {
    super(message, options);
    this.name = 'FerryError';
    this.code = code;
    if (options?.detail) this.detail = options.detail;
  }

  /** The exit status the command line uses for this error. */
  get exitCode(): 1 | 2 {
    return ERROR_CODES[this.code];
  }

  /** What crosses a process boundary: the detail stays with the code that threw it. */
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, value);
}

function isErrorDetail(value: unknown): value is ErrorDetail {
  return typeof value === 'object' && value !== null && Number.isInteger((value as { jobIndex?: unknown }).jobIndex);
}

/**
 * Turns anything thrown into a FerryError, keeping the code (and detail) of one that has them: also
 * a FerryError of another copy of this module, which `instanceof` does not know (a module loaded
 * twice, as a dynamic import under a loader hook can be).
 */
export function toFerryError(err: unknown, fallback: ErrorCode = 'ERR_FERRY_INTERNAL'): FerryError {
  if (err instanceof FerryError) return err;
  const e = err as { code?: unknown; message?: unknown; detail?: unknown } | null;
  const message = e && typeof e.message === 'string' ? e.message : String(err);
  const code = e && isErrorCode(e.code) ? e.code : fallback;
  return new FerryError(code, message, { cause: err, detail: e && isErrorDetail(e.detail) ? e.detail : undefined });
}
