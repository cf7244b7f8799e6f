/**
 * The whole surface of ferry's native addon (native/, built to build/Release/ferry_native.node),
 * declared in one place. Every buffer is borrowed, never copied: by the one-shot and zero-page
 * calls for the call only; by the batch calls until their Promise settles (the addon keeps the
 * array of buffers alive). Callers validate every argument first (backend.ts): the addon only
 * asserts, and reports a wrong type as ERR_FERRY_INTERNAL.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** A key inside the addon: its expanded schedule lives in native memory until keyDestroy. */
export interface KeyHandle {
  readonly __ferryKeyHandle: never;
}

/** The addon's AES-GCM implementations: its own VAES/VPCLMULQDQ code, or Node's OpenSSL EVP. */
export type GcmImplementation = 'vaes-avx512' | 'vaes-avx2' | 'evp';

export interface CpuFeatures {
  aes: boolean;
  pclmulqdq: boolean;
  avx2: boolean;
  vaes: boolean;
  vpclmulqdq: boolean;
  avx512f: boolean;
  avx512bw: boolean;
  avx512vl: boolean;
}

export interface NativeAddon {
  cpuFeatures(): CpuFeatures;
  /** The implementations this build has and this CPU runs, fastest first. */
  gcmImplementations(): GcmImplementation[];
  /** Copies and expands a 32-byte key; the caller may wipe its buffer right after. */
  keyCreate(key: Uint8Array, implementation: GcmImplementation): KeyHandle;
  /** Wipes the key now; batches still running keep their own reference and wipe it when done. */
  keyDestroy(key: KeyHandle): void;
  /** Seals on the calling thread: output = ciphertext ‖ tag (input.length + 16 bytes). `output`
   * may start at `input` (in place) but must not otherwise overlap it. Returns true. */
  seal(key: KeyHandle, iv: Uint8Array, aad: Uint8Array, input: Uint8Array, output: Uint8Array): boolean;
  /** Opens on the calling thread into output (input.length - 16 bytes); false when the tag does not
   * verify, and then `output` has been wiped. */
  open(key: KeyHandle, iv: Uint8Array, aad: Uint8Array, input: Uint8Array, output: Uint8Array): boolean;
  /** Decrypts `input`, the ciphertext bytes at `offset` of a message under `iv`, into `output`
   * (same length) with AES-CTR from that message's counter: an open without the tag check, so
   * nothing is authenticated (AeadKey.peek). Returns true. */
  ctr(key: KeyHandle, iv: Uint8Array, offset: number, input: Uint8Array, output: Uint8Array): boolean;
  /** For each `unitSize` piece of `data` in turn (the last may be shorter), writes to `output` the
   * 16-byte tag of an empty message with that piece as its additional data. Returns true. */
  tagUnits(key: KeyHandle, iv: Uint8Array, data: Uint8Array, unitSize: number, output: Uint8Array): boolean;
  /** tagUnits for the units of `base` that `indexes` names: unit i's tag goes to output[16 i, 16 i + 16). */
  tagUnitsAt(key: KeyHandle, iv: Uint8Array, base: Uint8Array, unitSize: number, indexes: Uint32Array, output: Uint8Array): boolean;
  /** `flat` holds iv, aad, input, output for each job in turn; a seal's input may be an array of
   * segments, gathered in order (output must not overlap them). Runs on up to `threads` workers of
   * the libuv pool (small batches on the calling thread); resolves with the number of pool workers
   * it ran on (at most `threads`; 0: the calling thread). */
  sealBatch(key: KeyHandle, flat: (Uint8Array | Uint8Array[])[], threads: number): Promise<number>;
  /** Like sealBatch, an open's output may be an array of segments the plaintext is scattered over
   * in order; rejects with `{code: 'ERR_FERRY_AUTH', index}` naming the first failed job, after
   * wiping every output of the batch. */
  openBatch(key: KeyHandle, flat: (Uint8Array | Uint8Array[])[], threads: number): Promise<number>;
  /** Writes the indexes of the all-zero pages to `out` (room for every page) and returns how many. */
  zeroPages(bytes: Uint8Array, pageSize: number, out: Uint32Array): number;
  /** zeroPages on the libuv pool; both buffers are held until the Promise settles. */
  zeroPagesAsync(bytes: Uint8Array, pageSize: number, out: Uint32Array): Promise<number>;
  /** zeroPages counting the pages the kernel never mapped as zero without reading them; -1 when the
   * kernel cannot tell. Only for bytes privateAnonymous holds true of. */
  zeroPagesUnread(bytes: Uint8Array, pageSize: number, out: Uint32Array): number;
  /** Whether the bytes lie wholly in private anonymous mappings (where an unmapped page reads as zero). */
  privateAnonymous(bytes: Uint8Array): boolean;
  /** `flat` holds destination, source for each copy in turn (equal lengths): copies them in order on
   * one worker of the libuv pool, holding every buffer until the Promise settles. */
  copyBatch(flat: Uint8Array[]): Promise<void>;
  /** Reads every byte (no early exit): the memory-bandwidth reference of `ferry bench crypto`. */
  readAll(bytes: Uint8Array): number;
}

export interface AddonLoad {
  addon: NativeAddon | null;
  /** Why the addon is not there, with what to do about it. */
  reason: string;
  path: string;
}

/** FERRY_NATIVE_ADDON overrides the path (CI runs the tests against the sanitizer build with it). */
function addonPath(): string {
  const override = process.env.FERRY_NATIVE_ADDON;
  if (override) return override;
  return fileURLToPath(new URL('../../build/Release/ferry_native.node', import.meta.url));
}

let loaded: AddonLoad | undefined;

/** Loads the addon once; never throws. */
export function loadAddon(): AddonLoad {
  if (loaded) return loaded;
  const path = addonPath();
  if (!existsSync(path)) {
    loaded = {
      addon: null,
      path,
      reason: `the native addon is not built (${path} is missing); run \`npm run build:native\` (needs cmake and a C++ compiler)`,
    };
    return loaded;
  }
  try {
    const addon = createRequire(import.meta.url)(path) as NativeAddon;
    loaded = { addon, path, reason: '' };
  } catch (err) {
    loaded = {
      addon: null,
      path,
      reason: `the native addon at ${path} did not load (${(err as Error).message}); rebuild it with \`npm run build:native\``,
    };
  }
  return loaded;
}
