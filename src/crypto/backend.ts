/**
 * The one AEAD interface every crypto backend implements: AES-256-GCM with a 96-bit IV and a
 * 128-bit tag, sealed output = ciphertext ‖ tag. Backends differ only in speed; for the same
 * inputs they give byte-identical output (tested against Wycheproof vectors and against each other).
 *
 * Validation lives here, in TypeScript (the better-sqlite3 rule): a backend's compute functions
 * are only ever called with checked lengths.
 */
import { FerryError } from '../errors.js';

export type BackendName = 'native' | 'node' | 'webcrypto';
export const BACKEND_NAMES: readonly BackendName[] = ['native', 'node', 'webcrypto'];

import { IV_BYTES, KEY_BYTES, TAG_BYTES } from '../common/secrets.js';

export { IV_BYTES, KEY_BYTES, TAG_BYTES };

/** One frame of a batch. `output`, when given, receives the result (seal: input.length + 16 bytes,
 * open: input.length - 16 bytes) and is what the batch returns for this job.
 *
 * A seal's input may be given as segments, sealed as if they were one buffer in that order (a
 * message's header and the guest memory its pages lie in, without first copying them together);
 * `output` must then not overlap any of them. An open's input is one buffer; its output may be
 * given as segments, over which the plaintext is scattered in order (their lengths add up to
 * input.length - 16; none overlaps the input or another): pages opened straight into guest memory.
 * The batch then returns an empty array for that job: its plaintext is where the segments are. */
export interface AeadJob {
  iv: Uint8Array;
  aad: Uint8Array;
  input: Uint8Array | readonly Uint8Array[];
  output?: Uint8Array | readonly Uint8Array[];
}

/** What an open batch returns for a job whose output is scattered over segments. */
export const SCATTERED = new Uint8Array(0);

/** The length of a job's input, one buffer or segments. */
export function inputLength(input: Uint8Array | readonly Uint8Array[]): number {
  if (input instanceof Uint8Array) return input.length;
  let n = 0;
  for (const part of input) n += part.length;
  return n;
}

/** A job's input as one buffer: itself, or its segments copied together (for backends that need one). */
export function joinInput(input: Uint8Array | readonly Uint8Array[]): Uint8Array {
  return input instanceof Uint8Array ? input : Buffer.concat(input);
}

/** The most threads a batch may be given (BatchOptions.threads). */
export const MAX_THREADS = 1024;

/** Options of the batch forms. */
export interface BatchOptions {
  /** How many threads a batch may spread over (default: every core for native, every job at once
   * for webcrypto). Native: pool workers; webcrypto: calls in flight on the libuv pool; node runs on
   * the calling thread, one thread whatever this says. */
  threads?: number;
  /** Told, once the batch succeeded, how many threads it ran on: never more than `threads`; 1 when
   * it ran on the calling thread. What a caller that enforces a thread limit can report. */
  onThreads?: (threads: number) => void;
}

/** A key imported once for many operations. `destroy()` wipes the backend's copy of the key. */
export interface AeadKey {
  /** `output`, when given, receives ciphertext ‖ tag (plaintext.length + 16 bytes) and is returned;
   * it may start at `plaintext` itself (in place) but must not otherwise overlap it. */
  seal(iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, output?: Uint8Array): Promise<Uint8Array>;
  /** Rejects with code ERR_FERRY_AUTH on any authentication failure; no plaintext is returned or
   * left in a given `output` then. `output`: sealed.length - 16 bytes, same overlap rule as seal. */
  open(iv: Uint8Array, aad: Uint8Array, sealed: Uint8Array, output?: Uint8Array): Promise<Uint8Array>;
  /** Seals every job; with the native backend the jobs spread over the libuv thread pool. */
  sealBatch(jobs: readonly AeadJob[], options?: BatchOptions): Promise<Uint8Array[]>;
  /** Opens every job; rejects with ERR_FERRY_AUTH (naming the failed job's index) if any fails,
   * and then wipes every output of the batch. */
  openBatch(jobs: readonly AeadJob[], options?: BatchOptions): Promise<Uint8Array[]>;
  /**
   * The counter-mode half of an open, without the tag check: the plaintext of bytes
   * [offset, offset + length) of the sealed message, NOT AUTHENTICATED. Only to decide where the
   * message's authenticated open will put its plaintext (docs/protocol.md, "Opening in place"):
   * nothing read here may be acted on before that open succeeded.
   */
  peek(iv: Uint8Array, sealed: Uint8Array, offset: number, length: number): Promise<Uint8Array>;
  destroy(): void;
}

export interface Backend {
  readonly name: BackendName;
  /** Copies the key: the caller may wipe its own buffer as soon as this resolves. */
  importKey(key: Uint8Array): Promise<AeadKey>;
  seal(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array>;
  open(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Promise<Uint8Array>;
  sealBatch(key: Uint8Array, jobs: readonly AeadJob[], options?: BatchOptions): Promise<Uint8Array[]>;
  openBatch(key: Uint8Array, jobs: readonly AeadJob[], options?: BatchOptions): Promise<Uint8Array[]>;
}

function bytes(name: string, value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(`${name} must be a Uint8Array or Buffer`);
  }
  return value;
}

export function checkKey(key: unknown): Uint8Array {
  const k = bytes('key', key);
  if (k.length !== KEY_BYTES) {
    throw new FerryError('ERR_FERRY_CRYPTO', `key must be ${KEY_BYTES} bytes (AES-256); got ${k.length}`);
  }
  return k;
}

export function checkIv(iv: unknown): Uint8Array {
  const v = bytes('iv', iv);
  if (v.length !== IV_BYTES) {
    throw new FerryError(
      'ERR_FERRY_CRYPTO',
      `iv must be ${IV_BYTES} bytes (96 bits); got ${v.length} bytes: other IV sizes are not supported`,
    );
  }
  return v;
}

export function checkAad(aad: unknown): Uint8Array {
  return bytes('aad', aad);
}

export function checkPlaintext(plaintext: unknown): Uint8Array {
  return bytes('plaintext', plaintext);
}

export function checkSealed(sealed: unknown): Uint8Array {
  const s = bytes('sealed', sealed);
  if (s.length < TAG_BYTES) {
    throw authError('sealed input is shorter than the 16-byte tag');
  }
  return s;
}

/** True when the two views share any byte. */
function overlaps(a: Uint8Array, b: Uint8Array): boolean {
  if (a.buffer !== b.buffer || a.length === 0 || b.length === 0) return false;
  return a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;
}

/** True when the two views share bytes without starting at the same one: the one layout no
 * backend can seal or open in (in place means output starts where input starts). */
function overlapsAskew(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteOffset !== b.byteOffset && overlaps(a, b);
}

/** Checks a caller's output buffer for `input` (or makes one when there is none). */
export function checkOutput(output: unknown, input: Uint8Array, length: number, name: string): Uint8Array {
  if (output === undefined) return Buffer.allocUnsafe(length);
  const out = bytes(name, output);
  if (out.length !== length) throw new RangeError(`${name} must be ${length} bytes; got ${out.length}`);
  if (overlapsAskew(out, input)) {
    throw new RangeError(`${name} overlaps the input without starting at it: use separate buffers or the same start`);
  }
  return out;
}

/** Checks a seal job's segments and its output against them; returns the output length. */
function checkSegments(job: AeadJob, parts: readonly unknown[], index: number): number {
  let length = 0;
  parts.forEach((part, i) => {
    length += bytes(`jobs[${index}].input[${i}]`, part).length;
  });
  if (job.output !== undefined) {
    const out = checkOutput(job.output, new Uint8Array(0), length + TAG_BYTES, `jobs[${index}].output`);
    if ((parts as Uint8Array[]).some((part) => overlaps(out, part))) {
      throw new RangeError(`jobs[${index}].output overlaps a segment of its input: gathered input cannot be sealed in place`);
    }
  }
  return length + TAG_BYTES;
}

/** Checks an open job's output segments against its input and each other. */
function checkOutputSegments(parts: readonly unknown[], input: Uint8Array, length: number, index: number): void {
  let total = 0;
  const views = parts.map((part, i) => {
    const view = bytes(`jobs[${index}].output[${i}]`, part);
    total += view.length;
    if (overlaps(view, input)) throw new RangeError(`jobs[${index}].output[${i}] overlaps the input: a scattered open cannot be in place`);
    return view;
  });
  if (total !== length) throw new RangeError(`jobs[${index}].output segments must add up to ${length} bytes; got ${total}`);
  const byBuffer = new Map<ArrayBufferLike, Uint8Array[]>();
  for (const v of views) {
    if (v.length === 0) continue;
    const same = byBuffer.get(v.buffer);
    if (same) same.push(v);
    else byBuffer.set(v.buffer, [v]);
  }
  for (const same of byBuffer.values()) {
    same.sort((a, b) => a.byteOffset - b.byteOffset);
    for (let i = 1; i < same.length; i++) {
      if (same[i - 1]!.byteOffset + same[i - 1]!.length > same[i]!.byteOffset) {
        throw new RangeError(`jobs[${index}].output segments overlap each other`);
      }
    }
  }
}

/** Checks a job and its output buffer; returns the output length. */
export function checkJob(job: AeadJob, index: number, direction: 'seal' | 'open'): number {
  if (job === null || typeof job !== 'object') throw new TypeError(`jobs[${index}] must be an object`);
  checkIv(job.iv);
  checkAad(job.aad);
  if (Array.isArray(job.input)) {
    if (direction === 'open') throw new TypeError(`jobs[${index}].input must be one Uint8Array or Buffer: only a seal gathers segments`);
    return checkSegments(job, job.input, index);
  }
  const input = direction === 'seal' ? checkPlaintext(job.input) : checkSealed(job.input);
  const outLength = direction === 'seal' ? input.length + TAG_BYTES : input.length - TAG_BYTES;
  if (Array.isArray(job.output)) {
    if (direction === 'seal') throw new TypeError(`jobs[${index}].output must be one Uint8Array or Buffer: only an open scatters`);
    checkOutputSegments(job.output, input, outLength, index);
  } else if (job.output !== undefined) {
    checkOutput(job.output, input, outLength, `jobs[${index}].output`);
  }
  return outLength;
}

/** Copies `plaintext` over `segments` in order (their lengths add up to its length). */
export function scatter(plaintext: Uint8Array, segments: readonly Uint8Array[]): void {
  let at = 0;
  for (const s of segments) {
    s.set(plaintext.subarray(at, at + s.length));
    at += s.length;
  }
}

/**
 * After a failed open batch: zeroes every output a caller gave (one buffer or segments) and every
 * buffer the batch made (`made`: what it would have returned, where known), as the native addon does.
 */
export function wipeOutputs(jobs: readonly AeadJob[], made: readonly (Uint8Array | undefined)[]): void {
  jobs.forEach((job, i) => {
    if (job.output instanceof Uint8Array) job.output.fill(0);
    else if (job.output !== undefined) for (const s of job.output) s.fill(0);
    made[i]?.fill(0);
  });
}

/** Checks a peek's IV and range; returns the ciphertext bytes the range covers. */
export function checkPeek(iv: unknown, sealed: unknown, offset: unknown, length: unknown): Uint8Array {
  checkIv(iv);
  const s = checkSealed(sealed);
  const text = s.length - TAG_BYTES;
  for (const [name, v] of [
    ['offset', offset],
    ['length', length],
  ] as const) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
      throw new RangeError(`peek ${name} must be a non-negative integer; got ${String(v)}`);
  }
  if ((offset as number) + (length as number) > text) {
    throw new RangeError(`peek of bytes ${String(offset)}..${(offset as number) + (length as number)} is outside the ${text}-byte message`);
  }
  return s.subarray(offset as number, (offset as number) + (length as number));
}

/**
 * The AES-CTR counter block of the data block that holds byte `offset` of a message under `iv`:
 * the IV, then the 32-bit big-endian block counter 2 + offset / 16 (counter 1 masks the tag). GCM
 * steps only those 32 bits; no message GCM allows (< 2^32 - 2 blocks) carries out of them.
 */
export function counterBlock(iv: Uint8Array, offset: number): Uint8Array {
  const block = new Uint8Array(16);
  block.set(iv);
  new DataView(block.buffer).setUint32(12, (2 + Math.floor(offset / 16)) >>> 0);
  return block;
}

export function checkThreads(threads: unknown): number | undefined {
  if (threads === undefined) return undefined;
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new RangeError(`threads must be an integer from 1 to ${MAX_THREADS}; got ${String(threads)}`);
  }
  return threads;
}

/** `jobIndex`: the failed job of a batch, for the caller to name what it was. */
export function authError(why = 'authentication failed', jobIndex?: number): FerryError {
  return new FerryError('ERR_FERRY_AUTH', `AES-GCM open failed: ${why}`, jobIndex === undefined ? undefined : { detail: { jobIndex } });
}

/** The one-shot and batch forms on top of importKey, shared by every backend. */
export abstract class BackendBase implements Backend {
  abstract readonly name: BackendName;
  abstract importKey(key: Uint8Array): Promise<AeadKey>;

  private async withKey<T>(key: Uint8Array, use: (k: AeadKey) => Promise<T>): Promise<T> {
    const k = await this.importKey(key);
    try {
      return await use(k);
    } finally {
      k.destroy();
    }
  }

  seal(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
    return this.withKey(key, (k) => k.seal(iv, aad, plaintext));
  }

  open(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Promise<Uint8Array> {
    return this.withKey(key, (k) => k.open(iv, aad, sealed));
  }

  sealBatch(key: Uint8Array, jobs: readonly AeadJob[], options?: BatchOptions): Promise<Uint8Array[]> {
    return this.withKey(key, (k) => k.sealBatch(jobs, options));
  }

  openBatch(key: Uint8Array, jobs: readonly AeadJob[], options?: BatchOptions): Promise<Uint8Array[]> {
    return this.withKey(key, (k) => k.openBatch(jobs, options));
  }
}
