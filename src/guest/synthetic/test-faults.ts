/**
 * Test-only fault hooks of an incoming synthetic guest, armed by environment variables that only
 * the guest process reads (the command line has no way to set them; a test sets them in the
 * environment of the agent that spawns the guest process). They damage what the migration wrote,
 * as a broken copy or a bad memory module would, so that the tests can show verify catching it.
 *
 * FERRY_TEST_CORRUPT_PAGE=N: every time memory page N lands at the destination, its first byte
 * is changed (flipped if data arrived, made non-zero if a zero marker did), after the write and
 * before verify hashes it.
 */
import { FerryError } from '../../errors.js';
import type { GuestMemory } from './memory.js';

export const CORRUPT_PAGE_ENV = 'FERRY_TEST_CORRUPT_PAGE';

/** The page FERRY_TEST_CORRUPT_PAGE names, or null when unset. */
export function corruptPageFromEnv(env: NodeJS.ProcessEnv, pageCount: number): number | null {
  const raw = env[CORRUPT_PAGE_ENV];
  if (raw === undefined || raw === '') return null;
  const page = Number(raw);
  if (!Number.isSafeInteger(page) || page < 0 || page >= pageCount) {
    throw new FerryError('ERR_FERRY_INPUT', `${CORRUPT_PAGE_ENV} must be a page index below ${pageCount}, got ${JSON.stringify(raw)}`);
  }
  return page;
}

/** The DestinationGuest.pagesLanded hook that damages page `page`. */
export function pageCorrupter(memory: GuestMemory, page: number): (first: number, count: number, zero: boolean) => void {
  return (first, count, zero) => {
    if (page < first || page >= first + count) return;
    const bytes = memory.pages(page, 1);
    bytes[0] = zero ? bytes[0]! | 0x5a : bytes[0]! ^ 0x5a;
  };
}
