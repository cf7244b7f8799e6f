/**
 * The `webcrypto` backend: crypto.subtle AES-GCM. Every call is a round trip to the libuv pool
 * (about 30 µs), so batches keep many calls in flight at once to use every core (as many as
 * BatchOptions.threads allows).
 *
 * A CryptoKey is imported non-extractable; WebCrypto gives no way to wipe it, so `destroy()` drops
 * the reference and the key's memory goes when the garbage collector frees it. The raw key is
 * never kept.
 */
import { webcrypto } from 'node:crypto';
import {
  BackendBase,
  SCATTERED,
  TAG_BYTES,
  authError,
  checkAad,
  checkIv,
  checkJob,
  checkKey,
  checkOutput,
  checkPeek,
  checkPlaintext,
  checkSealed,
  checkThreads,
  counterBlock,
  joinInput,
  scatter,
  wipeOutputs,
  type AeadJob,
  type AeadKey,
  type BatchOptions,
} from './backend.js';
import { FerryError } from '../errors.js';

const subtle = webcrypto.subtle;
type CryptoKey = webcrypto.CryptoKey;
type AesGcmParams = webcrypto.AesGcmParams;

/** WebCrypto refuses views on a SharedArrayBuffer (guest memory is one): those are copied. */
function unshared(view: Uint8Array): Uint8Array {
  return view.buffer instanceof SharedArrayBuffer ? Uint8Array.from(view) : view;
}

function params(iv: Uint8Array, aad: Uint8Array): AesGcmParams {
  return { name: 'AES-GCM', iv: unshared(iv), additionalData: unshared(aad), tagLength: TAG_BYTES * 8 };
}

function place(result: ArrayBuffer, output?: Uint8Array | readonly Uint8Array[]): Uint8Array {
  const view = new Uint8Array(result);
  if (!output) return view;
  if (output instanceof Uint8Array) output.set(view);
  else scatter(view, output);
  view.fill(0);
  return output instanceof Uint8Array ? output : SCATTERED;
}

class WebCryptoKey implements AeadKey {
  private key: CryptoKey | null;
  /** The same key for AES-CTR: peek's keystream. */
  private ctrKey: CryptoKey | null;

  constructor(key: CryptoKey, ctrKey: CryptoKey) {
    this.key = key;
    this.ctrKey = ctrKey;
  }

  private live(): CryptoKey {
    if (!this.key) throw new FerryError('ERR_FERRY_CRYPTO', 'key was destroyed');
    return this.key;
  }

  private async sealJob(job: AeadJob): Promise<Uint8Array> {
    const input = unshared(joinInput(job.input));
    try {
      return place(await subtle.encrypt(params(job.iv, job.aad), this.live(), input), job.output as Uint8Array | undefined);
    } finally {
      if (input !== job.input) input.fill(0); // our copy of the plaintext
    }
  }

  private async openJob(job: AeadJob): Promise<Uint8Array> {
    let result: ArrayBuffer;
    try {
      result = await subtle.decrypt(params(job.iv, job.aad), this.live(), unshared(job.input as Uint8Array));
    } catch {
      throw authError();
    }
    return place(result, job.output);
  }

  async seal(iv: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, output?: Uint8Array): Promise<Uint8Array> {
    const input = checkPlaintext(plaintext);
    const out = output && checkOutput(output, input, input.length + TAG_BYTES, 'output');
    return this.sealJob({ iv: checkIv(iv), aad: checkAad(aad), input, output: out });
  }

  async open(iv: Uint8Array, aad: Uint8Array, sealed: Uint8Array, output?: Uint8Array): Promise<Uint8Array> {
    const input = checkSealed(sealed);
    const out = output && checkOutput(output, input, input.length - TAG_BYTES, 'output');
    return this.openJob({ iv: checkIv(iv), aad: checkAad(aad), input, output: out });
  }

  /**
   * Runs `run` over every job with at most `threads` calls in flight (default: all at once), each
   * call a trip to the libuv pool, so `threads` bounds the pool threads the batch occupies.
   */
  private async inFlight(
    jobs: readonly AeadJob[],
    options: BatchOptions | undefined,
    run: (job: AeadJob) => Promise<Uint8Array>,
  ): Promise<PromiseSettledResult<Uint8Array>[]> {
    const lanes = Math.max(1, Math.min(checkThreads(options?.threads) ?? jobs.length, jobs.length));
    const results: PromiseSettledResult<Uint8Array>[] = new Array(jobs.length);
    let next = 0;
    const lane = async () => {
      for (let i = next++; i < jobs.length; i = next++) {
        try {
          results[i] = { status: 'fulfilled', value: await run(jobs[i]!) };
        } catch (reason) {
          results[i] = { status: 'rejected', reason };
        }
      }
    };
    await Promise.all(Array.from({ length: lanes }, lane));
    if (results.every((r) => r.status === 'fulfilled')) options?.onThreads?.(lanes);
    return results;
  }

  async sealBatch(jobs: readonly AeadJob[], options?: BatchOptions): Promise<Uint8Array[]> {
    jobs.forEach((job, i) => checkJob(job, i, 'seal'));
    const results = await this.inFlight(jobs, options, (job) => this.sealJob(job));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return results.map((r) => (r as PromiseFulfilledResult<Uint8Array>).value);
  }

  async openBatch(jobs: readonly AeadJob[], options?: BatchOptions): Promise<Uint8Array[]> {
    jobs.forEach((job, i) => checkJob(job, i, 'open'));
    const results = await this.inFlight(jobs, options, (job) => this.openJob(job));
    const failed = results.findIndex((r) => r.status === 'rejected');
    if (failed < 0) return results.map((r) => (r as PromiseFulfilledResult<Uint8Array>).value);
    wipeOutputs(
      jobs,
      results.map((r) => (r.status === 'fulfilled' ? r.value : undefined)),
    );
    throw authError(`job ${failed} failed authentication`, failed);
  }

  /** AES-CTR from the message's counter block (32-bit counter, as GCM steps it): the open without its tag check. */
  async peek(iv: Uint8Array, sealed: Uint8Array, offset: number, length: number): Promise<Uint8Array> {
    const input = checkPeek(iv, sealed, offset, length);
    if (!this.ctrKey) throw new FerryError('ERR_FERRY_CRYPTO', 'key was destroyed');
    const skip = offset % 16;
    const padded = new Uint8Array(skip + length);
    padded.set(input, skip);
    const params = { name: 'AES-CTR', counter: counterBlock(iv, offset), length: 32 };
    return new Uint8Array(await subtle.decrypt(params, this.ctrKey, padded)).subarray(skip);
  }

  destroy(): void {
    this.key = null;
    this.ctrKey = null;
  }
}

export class WebCryptoBackend extends BackendBase {
  readonly name = 'webcrypto' as const;

  async importKey(key: Uint8Array): Promise<AeadKey> {
    const k = await subtle.importKey('raw', checkKey(key), { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
    const ctr = await subtle.importKey('raw', key, { name: 'AES-CTR' }, false, ['decrypt']);
    return new WebCryptoKey(k, ctr);
  }
}
