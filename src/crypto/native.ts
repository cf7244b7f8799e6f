/**
 * The `native` backend: ferry's addon. AES-256-GCM with its own VAES/VPCLMULQDQ code where the CPU
 * has it, else OpenSSL's EVP from inside Node; batches spread over the libuv thread pool.
 */
import { availableParallelism } from 'node:os';
import {
  BackendBase,
  TAG_BYTES,
  authError,
  SCATTERED,
  checkAad,
  checkIv,
  checkJob,
  checkPeek,
  checkKey,
  checkOutput,
  checkPlaintext,
  checkSealed,
  checkThreads,
  type AeadJob,
  type AeadKey,
  type BatchOptions,
} from './backend.js';
import { FerryError, toFerryError } from '../errors.js';
import type { GcmImplementation, KeyHandle, NativeAddon } from './native-addon.js';

/** One-shot calls up to this size run on the calling thread (about 150 µs at 1 MiB); larger ones go
 * to the pool so the event loop is never held long. */
const INLINE_LIMIT = 1 << 20;

const NO_BYTES = new Uint8Array(0);

class NativeKey implements AeadKey {
  private handle: KeyHandle | null;

  constructor(
    private readonly addon: NativeAddon,
    handle: KeyHandle,
  ) {
    this.handle = handle;
  }

  private live(): KeyHandle {
    if (!this.handle) throw new FerryError('ERR_FERRY_CRYPTO', 'key was destroyed');
    return this.handle;
  }

  async seal(iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, output?: Uint8Array): Promise<Uint8Array> {
    checkIv(iv);
    checkAad(aad);
    checkPlaintext(plaintext);
    const out = checkOutput(output, plaintext, plaintext.length + TAG_BYTES, 'output');
    if (plaintext.length > INLINE_LIMIT) {
      return (await this.sealBatch([{ iv, aad, input: plaintext, output: out }], { threads: 1 }))[0]!;
    }
    this.addon.seal(this.live(), iv, aad, plaintext, out);
    return out;
  }

  async open(iv: Uint8Array, aad: Uint8Array, sealed: Uint8Array, output?: Uint8Array): Promise<Uint8Array> {
    checkIv(iv);
    checkAad(aad);
    checkSealed(sealed);
    const out = checkOutput(output, sealed, sealed.length - TAG_BYTES, 'output');
    if (sealed.length > INLINE_LIMIT) {
      try {
        return (await this.openBatch([{ iv, aad, input: sealed, output: out }], { threads: 1 }))[0]!;
      } catch (err) {
        throw (err as FerryError).code === 'ERR_FERRY_AUTH' ? authError() : err;
      }
    }
    if (!this.addon.open(this.live(), iv, aad, sealed, out)) throw authError();
    return out;
  }

  private async batch(jobs: readonly AeadJob[], direction: 'seal' | 'open', options?: BatchOptions): Promise<Uint8Array[]> {
    const threads = checkThreads(options?.threads) ?? availableParallelism();
    const outputs: Uint8Array[] = [];
    const flat: (Uint8Array | Uint8Array[])[] = [];
    jobs.forEach((job, i) => {
      const length = checkJob(job, i, direction);
      // Segments go as an array of their own (copied: the addon holds it until the batch settles).
      if (job.output !== undefined && !(job.output instanceof Uint8Array)) {
        outputs.push(SCATTERED);
        flat.push(job.iv, job.aad, job.input as Uint8Array, [...job.output]);
        return;
      }
      const out = job.output ?? (length === 0 ? NO_BYTES : Buffer.allocUnsafe(length));
      outputs.push(out);
      flat.push(job.iv, job.aad, job.input instanceof Uint8Array ? job.input : [...job.input], out);
    });
    const handle = this.live();
    try {
      const workers = await (direction === 'seal'
        ? this.addon.sealBatch(handle, flat, threads)
        : this.addon.openBatch(handle, flat, threads));
      options?.onThreads?.(Math.max(1, workers));
    } catch (err) {
      const e = err as { code?: string; index?: number };
      if (e.code === 'ERR_FERRY_AUTH') throw authError(`job ${e.index} failed authentication`, e.index);
      throw toFerryError(err);
    }
    return outputs;
  }

  sealBatch(jobs: readonly AeadJob[], options?: BatchOptions): Promise<Uint8Array[]> {
    return this.batch(jobs, 'seal', options);
  }

  openBatch(jobs: readonly AeadJob[], options?: BatchOptions): Promise<Uint8Array[]> {
    return this.batch(jobs, 'open', options);
  }

  async peek(iv: Uint8Array, sealed: Uint8Array, offset: number, length: number): Promise<Uint8Array> {
    const input = checkPeek(iv, sealed, offset, length);
    const out = Buffer.allocUnsafe(length);
    this.addon.ctr(this.live(), iv, offset, input, out);
    return out;
  }

  destroy(): void {
    if (this.handle) this.addon.keyDestroy(this.handle);
    this.handle = null;
  }
}

export class NativeBackend extends BackendBase {
  readonly name = 'native' as const;

  /** `implementation`: which of the addon's GCM implementations this backend's keys use. */
  constructor(
    private readonly addon: NativeAddon,
    readonly implementation: GcmImplementation,
  ) {
    super();
  }

  async importKey(key: Uint8Array): Promise<AeadKey> {
    return new NativeKey(this.addon, this.addon.keyCreate(checkKey(key), this.implementation));
  }
}
