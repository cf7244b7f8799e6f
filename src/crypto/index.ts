/**
 * ferry's crypto: AES-256-GCM sealing and zero-page detection behind one interface, with the
 * backend chosen by `FERRY_CRYPTO=native|node|webcrypto` or, by default, the fastest that loads.
 *
 *   import { loadBackend } from 'ferry/crypto';
 *   const backend = await loadBackend();
 *   const sealed = await backend.seal(key, iv, aad, plaintext);
 */
import { FerryError } from '../errors.js';
import { BACKEND_NAMES, type Backend, type BackendName } from './backend.js';
import { NodeBackend } from './node.js';
import { WebCryptoBackend } from './webcrypto.js';
import { zeroPagesTs, DEFAULT_PAGE_SIZE } from './zero-pages.js';

export * from './backend.js';
export { DEFAULT_PAGE_SIZE } from './zero-pages.js';

function isBackendName(value: string): value is BackendName {
  return (BACKEND_NAMES as readonly string[]).includes(value);
}

/** The backend named, or FERRY_CRYPTO's, or the fastest that loads. */
export async function loadBackend(name?: string): Promise<Backend> {
  const wanted = name ?? process.env.FERRY_CRYPTO ?? '';
  if (wanted !== '' && !isBackendName(wanted)) {
    throw new FerryError('ERR_FERRY_INPUT', `unknown crypto backend "${wanted}": use one of ${BACKEND_NAMES.join(', ')}`);
  }
  switch (wanted) {
    case 'native':
      throw new FerryError('ERR_FERRY_CRYPTO', 'the native addon is not built in this version');
    case 'webcrypto':
      return new WebCryptoBackend();
    default:
      return new NodeBackend();
  }
}

/** The indexes of the all-zero pages of `buffer`, ascending (a partial last page counts). */
export function zeroPages(buffer: Uint8Array, pageSize: number = DEFAULT_PAGE_SIZE): Uint32Array {
  return zeroPagesTs(buffer, pageSize);
}
