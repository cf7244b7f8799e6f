/**
 * ferry's crypto: AES-256-GCM sealing and zero-page detection behind one interface, with the
 * backend chosen by `FERRY_CRYPTO=native|node|webcrypto` or, by default, the fastest that loads
 * (native, then node). When the addon is missing, the library prints nothing: onCryptoFallback
 * hears, once, that the fallback took over and why, and the process decides where to say it.
 *
 *   import { loadBackend } from 'ferry/crypto';
 *   const backend = await loadBackend();
 *   const sealed = await backend.seal(key, iv, aad, plaintext);
 */
import { constants as bufferConstants } from 'node:buffer';
import { FerryError } from '../errors.js';
import { BACKEND_NAMES, type Backend, type BackendName } from './backend.js';
import { NativeBackend } from './native.js';
import { loadAddon, type CpuFeatures, type GcmImplementation } from './native-addon.js';
import { NodeBackend } from './node.js';
import { NativeUnitTagger, NodeUnitTagger, type UnitTagger } from './unit-tags.js';
import { WebCryptoBackend } from './webcrypto.js';
import { checkPageSize, DEFAULT_PAGE_SIZE, scanViewTs, scanZeroPages, scanZeroPagesAsync, type ZeroPageSource } from './zero-pages.js';

export * from './backend.js';
export { NativeBackend } from './native.js';
export { KeySchedule, deriveEpochKey, EPOCH_KEY_INFO, type Direction } from './key-schedule.js';
export type { CpuFeatures, GcmImplementation } from './native-addon.js';
export { DEFAULT_PAGE_SIZE, zeroPagesTs, type ZeroPageSource } from './zero-pages.js';
export { UNIT_TAG_BYTES, UNIT_TAG_IV_BYTES, type UnitTagger } from './unit-tags.js';

function isBackendName(value: string): value is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(value);
}

/** The note of the first default choice that fell back from the addon; null until one did. */
let fallbackNotice: string | null = null;
const fallbackListeners = new Set<(notice: string) => void>();

function fellBack(reason: string): void {
  if (fallbackNotice !== null) return;
  fallbackNotice = `using node:crypto and a TypeScript zero-page scan: ${reason}`;
  for (const listener of fallbackListeners) listener(fallbackNotice);
  fallbackListeners.clear();
}

/**
 * Tells `listener`, once, that this process fell back from the addon to node:crypto and the
 * TypeScript zero-page scan, and why (at once when it already has). A library must not write to
 * the process's stderr: the CLI, the agent and the guest process each say it in their own voice
 * (a guest process in its timestamped log, the agent in its JSON log). Returns the unsubscribe.
 */
export function onCryptoFallback(listener: (notice: string) => void): () => void {
  if (fallbackNotice !== null) {
    listener(fallbackNotice);
    return () => {};
  }
  fallbackListeners.add(listener);
  return () => fallbackListeners.delete(listener);
}

/** Why the native backend cannot load here, or null when it can. */
export function nativeUnavailableReason(): string | null {
  const { addon, reason } = loadAddon();
  if (!addon) return reason;
  if (addon.gcmImplementations().length === 0) {
    return 'the native addon has no AES-GCM implementation for this CPU (needs VAES+VPCLMULQDQ, or a build with OpenSSL headers)';
  }
  return null;
}

/** The addon's AES-GCM implementations usable here, fastest first (empty without the addon). */
export function nativeImplementations(): GcmImplementation[] {
  return loadAddon().addon?.gcmImplementations() ?? [];
}

/** The native backend with the given implementation (default: FERRY_NATIVE_GCM, else the fastest). */
export function nativeBackend(implementation?: GcmImplementation): NativeBackend {
  const reason = nativeUnavailableReason();
  if (reason !== null) throw new FerryError('ERR_FERRY_CRYPTO', reason);
  const available = nativeImplementations();
  const wanted = implementation ?? (process.env.FERRY_NATIVE_GCM as GcmImplementation | undefined) ?? available[0]!;
  if (!available.includes(wanted)) {
    throw new FerryError(
      'ERR_FERRY_CRYPTO',
      `native AES-GCM implementation "${wanted}" is not available here; available: ${available.join(', ')}`,
    );
  }
  return new NativeBackend(loadAddon().addon!, wanted);
}

/** The backend named, or FERRY_CRYPTO's, or the fastest that loads. */
export async function loadBackend(name?: string): Promise<Backend> {
  const wanted = name ?? process.env.FERRY_CRYPTO ?? '';
  if (wanted !== '' && !isBackendName(wanted)) {
    throw new FerryError('ERR_FERRY_INPUT', `unknown crypto backend "${wanted}": use one of ${BACKEND_NAMES.join(', ')}`);
  }
  switch (wanted) {
    case 'native':
      return nativeBackend();
    case 'webcrypto':
      return new WebCryptoBackend();
    case 'node':
      return new NodeBackend();
    default: {
      const reason = nativeUnavailableReason();
      if (reason === null) return nativeBackend();
      fellBack(reason);
      return new NodeBackend();
    }
  }
}

/**
 * A tagger of pages and blocks for verify (unit-tags.ts) under `key`, which the caller may wipe
 * once this returns: the addon's fastest GCM unless FERRY_CRYPTO names node or webcrypto (whose
 * synchronous stand-in is node:crypto), or the addon does not load. Both give the same bytes.
 */
export function unitTagger(key: Uint8Array): UnitTagger {
  const wanted = process.env.FERRY_CRYPTO ?? '';
  if (wanted === 'native' || (wanted === '' && nativeUnavailableReason() === null)) {
    return new NativeUnitTagger(loadAddon().addon!, key, nativeBackend().implementation);
  }
  return new NodeUnitTagger(key);
}

/**
 * The addon's copyBatch (memcpy on the libuv pool, for writing pages into guest memory off the
 * event loop), or null without the addon.
 */
export function pageCopier(): ((flat: Uint8Array[]) => Promise<void>) | null {
  const { addon } = loadAddon();
  return addon ? (flat) => addon.copyBatch(flat) : null;
}

/** The CPU features the addon probed, or null without the addon. */
export function cpuFeatures(): CpuFeatures | null {
  return loadAddon().addon?.cpuFeatures() ?? null;
}

/**
 * The indexes, ascending, of the all-zero pages of `buffer` (a partial last page counts as a
 * page). Takes views, Buffers, ArrayBuffers and SharedArrayBuffers of any size the platform allows.
 * Synchronous: the addon scans at memory speed, about 50 ms a GiB.
 */
export function zeroPages(buffer: ZeroPageSource, pageSize: number = DEFAULT_PAGE_SIZE): Uint32Array {
  const { addon, reason } = loadAddon();
  if (addon) return scanZeroPages(buffer, pageSize, (view, size, out) => addon.zeroPages(view, size, out));
  fellBack(reason);
  return scanZeroPages(buffer, pageSize, scanViewTs);
}

/** Backing stores found to lie in private anonymous mappings, or not: asked once each. */
const anonymousStores = new WeakMap<ArrayBufferLike, boolean>();

function bufferOf(source: ZeroPageSource): ArrayBufferLike {
  if (source instanceof Uint8Array) return source.buffer;
  if (source instanceof ArrayBuffer || source instanceof SharedArrayBuffer) return source;
  throw new TypeError('buffer must be a Uint8Array, Buffer, ArrayBuffer or SharedArrayBuffer');
}

/**
 * zeroPages for memory this process may never have touched (a guest's memory at the destination):
 * the pages the kernel never mapped are zero without being read (/proc/self/pagemap), so a fresh
 * page costs neither a fault nor a scan, and the others are scanned. The shortcut holds only for
 * private anonymous memory (a SharedArrayBuffer's is), asked of the kernel once per buffer; any
 * other buffer, one too large for a single view, a kernel that cannot tell, or no addon, gets
 * zeroPages.
 */
export function zeroPagesUnread(source: ZeroPageSource, pageSize: number = DEFAULT_PAGE_SIZE): Uint32Array {
  const { addon } = loadAddon();
  const buffer = bufferOf(source);
  checkPageSize(pageSize);
  if (!addon) return zeroPages(source, pageSize);
  let anonymous = anonymousStores.get(buffer);
  if (anonymous === undefined) {
    anonymous = buffer.byteLength > 0 && buffer.byteLength <= bufferConstants.MAX_LENGTH && addon.privateAnonymous(new Uint8Array(buffer));
    anonymousStores.set(buffer, anonymous);
  }
  if (!anonymous) return zeroPages(source, pageSize);
  return scanZeroPages(source, pageSize, (v, size, out) => {
    const n = addon.zeroPagesUnread(v, size, out);
    return n >= 0 ? n : addon.zeroPages(v, size, out);
  });
}

/**
 * zeroPages without holding the event loop: the addon scans on the libuv pool (the TypeScript
 * fallback still runs on the calling thread). Do not change the buffer until it resolves.
 */
export async function zeroPagesAsync(buffer: ZeroPageSource, pageSize: number = DEFAULT_PAGE_SIZE): Promise<Uint32Array> {
  const { addon, reason } = loadAddon();
  if (addon) return scanZeroPagesAsync(buffer, pageSize, (view, size, out) => addon.zeroPagesAsync(view, size, out));
  fellBack(reason);
  return scanZeroPages(buffer, pageSize, scanViewTs);
}
