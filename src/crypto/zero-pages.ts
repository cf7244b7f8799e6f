/**
 * Zero-page detection in TypeScript: the fallback when the addon is missing. Compares each page
 * with a shared all-zero page using Buffer.equals (memcmp inside).
 */

export const DEFAULT_PAGE_SIZE = 4096;

export function checkPageSize(pageSize: unknown): number {
  if (typeof pageSize !== 'number' || !Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1 << 30) {
    throw new RangeError(`pageSize must be an integer from 1 to 2^30; got ${String(pageSize)}`);
  }
  return pageSize;
}

/** How many pages a buffer holds; a partial last page counts as a page. */
export function pageCount(byteLength: number, pageSize: number): number {
  return Math.ceil(byteLength / pageSize);
}

let zeroPage = Buffer.alloc(0);

/**
 * The indexes, in ascending order, of the pages of `buffer` whose bytes are all zero. A partial
 * page at the end is zero when all of its bytes are.
 */
export function zeroPagesTs(buffer: Uint8Array, pageSize = DEFAULT_PAGE_SIZE): Uint32Array {
  checkPageSize(pageSize);
  if (zeroPage.length < pageSize) zeroPage = Buffer.alloc(pageSize);
  const buf = Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const pages = pageCount(buf.length, pageSize);
  const found = new Uint32Array(pages);
  let n = 0;
  for (let p = 0; p < pages; p++) {
    const start = p * pageSize;
    const end = Math.min(start + pageSize, buf.length);
    if (buf.subarray(start, end).equals(zeroPage.subarray(0, end - start))) found[n++] = p;
  }
  return found.slice(0, n);
}
