/**
 * Zero-page detection: which pages of a buffer are entirely zero. The addon's AVX2 scan does the
 * work when it is loaded; a TypeScript scan (Buffer.equals against a zero page, memcmp inside) is
 * the fallback. Both go through `scanZeroPages`, which walks the buffer in views of bounded size,
 * so ArrayBuffers beyond a typed array's 4 GiB limit work too.
 */

export const DEFAULT_PAGE_SIZE = 4096;

/** Page indexes are Uint32: a buffer may hold at most this many pages. */
const MAX_PAGES = 2 ** 32 - 1;
/** Pages per scanned view: bounds the scratch index array at 4 MiB whatever the page size. */
const PAGES_PER_VIEW = 1 << 20;

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

/** Scans one view (at most PAGES_PER_VIEW pages), writing the zero pages' indexes to `out`. */
export type ViewScanner = (view: Uint8Array, pageSize: number, out: Uint32Array) => number;
export type AsyncViewScanner = (view: Uint8Array, pageSize: number, out: Uint32Array) => Promise<number>;

let zeroPage = Buffer.alloc(0);

export const scanViewTs: ViewScanner = (view, pageSize, out) => {
  if (zeroPage.length < pageSize) zeroPage = Buffer.alloc(pageSize);
  const buf = Buffer.from(view.buffer, view.byteOffset, view.byteLength);
  const pages = pageCount(buf.length, pageSize);
  let n = 0;
  for (let p = 0; p < pages; p++) {
    const start = p * pageSize;
    const end = Math.min(start + pageSize, buf.length);
    if (buf.subarray(start, end).equals(zeroPage.subarray(0, end - start))) out[n++] = p;
  }
  return n;
};

export type ZeroPageSource = Uint8Array | ArrayBuffer | SharedArrayBuffer;

/** The views `source` is scanned in, each with the index of its first page. */
function* views(source: ZeroPageSource, pageSize: number): Generator<{ view: Uint8Array; firstPage: number }> {
  checkPageSize(pageSize);
  let buffer: ArrayBufferLike;
  let offset: number;
  let length: number;
  if (source instanceof Uint8Array) {
    [buffer, offset, length] = [source.buffer, source.byteOffset, source.byteLength];
  } else if (source instanceof ArrayBuffer || source instanceof SharedArrayBuffer) {
    [buffer, offset, length] = [source, 0, source.byteLength];
  } else {
    throw new TypeError('buffer must be a Uint8Array, Buffer, ArrayBuffer or SharedArrayBuffer');
  }
  const pages = pageCount(length, pageSize);
  if (pages > MAX_PAGES) {
    throw new RangeError(`buffer holds ${pages} pages of ${pageSize} bytes; at most 2^32 - 1 pages: use a larger page size`);
  }
  const viewBytes = Math.min(PAGES_PER_VIEW, pages) * pageSize;
  for (let start = 0; start < length; start += viewBytes) {
    yield { view: new Uint8Array(buffer, offset + start, Math.min(viewBytes, length - start)), firstPage: start / pageSize };
  }
}

/** The scratch for a view's page indexes: room for the pages of the largest view. */
function scratchFor(view: Uint8Array, pageSize: number): Uint32Array {
  return new Uint32Array(pageCount(view.length, pageSize));
}

/** Appends the indexes a view's scan found, shifted to the whole buffer's page numbers. */
function collect(found: Uint32Array[], scratch: Uint32Array, n: number, firstPage: number): void {
  const part = scratch.slice(0, n);
  if (firstPage !== 0) for (let i = 0; i < n; i++) part[i] += firstPage;
  found.push(part);
}

function join(found: Uint32Array[]): Uint32Array {
  if (found.length === 1) return found[0]!;
  const out = new Uint32Array(found.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of found) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * The indexes, in ascending order, of the pages of `source` whose bytes are all zero. A partial
 * page at the end is zero when all of its bytes are.
 */
export function scanZeroPages(source: ZeroPageSource, pageSize: number, scan: ViewScanner): Uint32Array {
  const found: Uint32Array[] = [];
  let scratch: Uint32Array | undefined;
  for (const { view, firstPage } of views(source, pageSize)) {
    scratch ??= scratchFor(view, pageSize);
    collect(found, scratch, scan(view, pageSize, scratch), firstPage);
  }
  return join(found);
}

/** scanZeroPages with a scan that runs off the calling thread. */
export async function scanZeroPagesAsync(source: ZeroPageSource, pageSize: number, scan: AsyncViewScanner): Promise<Uint32Array> {
  const found: Uint32Array[] = [];
  let scratch: Uint32Array | undefined;
  for (const { view, firstPage } of views(source, pageSize)) {
    scratch ??= scratchFor(view, pageSize);
    collect(found, scratch, await scan(view, pageSize, scratch), firstPage);
  }
  return join(found);
}

/** The TypeScript scan of a whole buffer (the fallback, and the benchmark's reference). */
export function zeroPagesTs(source: ZeroPageSource, pageSize = DEFAULT_PAGE_SIZE): Uint32Array {
  return scanZeroPages(source, pageSize, scanViewTs);
}
