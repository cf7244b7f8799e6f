/**
 * A digest of a QEMU guest's RAM, taken while it is paused: QMP `pmemsave` writes guest-physical
 * memory into a named pipe in the guest's 0700 directory, read and hashed as it comes, so no copy
 * of the guest's memory ever lands on disk. Both ends of a migration hash the same range, so a
 * page that crossed wrongly changes the digest.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { FerryError } from '../../errors.js';
import type { QmpClient } from './qmp.js';

const run = promisify(execFile);

export const RAM_DIGEST_ALGORITHM = 'sha256-qemu-pmemsave-v1';
/**
 * RAM below 3 GiB is one run of guest-physical addresses on the machine types ferry pins; above
 * it QEMU splits RAM around the PCI hole. Verified moves cover guests up to this size.
 */
export const MAX_DIGEST_BYTES = 3 * 2 ** 30;

export function canDigest(memoryBytes: number): boolean {
  return memoryBytes <= MAX_DIGEST_BYTES;
}

/** SHA-256 of guest-physical [0, memoryBytes) of a paused guest. */
export async function ramDigest(qmp: QmpClient, dir: string, memoryBytes: number): Promise<string> {
  if (!canDigest(memoryBytes))
    throw new FerryError('ERR_FERRY_REFUSED', `a digest of guest RAM covers guests of up to ${MAX_DIGEST_BYTES / 2 ** 30} GiB`);
  const fifo = path.join(dir, `.ram-digest-${process.pid}.fifo`);
  await fs.rm(fifo, { force: true });
  await run('mkfifo', ['-m', '600', fifo]);
  try {
    const hash = createHash('sha256');
    const reading = new Promise<void>((resolve, reject) => {
      const stream = createReadStream(fifo);
      stream.on('data', (chunk) => hash.update(chunk));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    // pmemsave blocks QEMU's monitor until it has written everything; a large guest takes seconds.
    await qmp.execute('pmemsave', { val: 0, size: memoryBytes, filename: fifo }, { timeoutMs: 10 * 60_000 });
    await reading;
    return hash.digest('hex');
  } finally {
    await fs.rm(fifo, { force: true });
  }
}
