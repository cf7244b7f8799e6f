/**
 * Durable, atomic file writes for everything ferry keeps on disk (agent state, keys, the cluster
 * file): the bytes go to a temporary file in the same directory, which is fsync'd, then renamed
 * over the target (or linked, when the target must not exist yet), and the directory is fsync'd so
 * the rename itself survives a crash. A reader sees the old file or the new one, never a mix.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fchmodSync, fsyncSync, openSync, promises as fs, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

const tempName = (target: string) => path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
/** O_EXCL: never write through a file (or symlink) someone planted at the temporary name. */
const CREATE_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL;

async function writeTemp(target: string, data: string | Uint8Array, mode: number): Promise<string> {
  const temp = tempName(target);
  const handle = await fs.open(temp, CREATE_NEW, mode);
  try {
    await handle.writeFile(data);
    await handle.chmod(mode); // the umask may have narrowed or widened the creation mode
    await handle.sync();
  } catch (err) {
    await handle.close();
    await fs.rm(temp, { force: true });
    throw err;
  }
  await handle.close();
  return temp;
}

export async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Replaces `target` atomically and durably with `data` (mode 0600 unless told otherwise). */
export async function writeFileAtomic(target: string, data: string | Uint8Array, mode = FILE_MODE): Promise<void> {
  const temp = await writeTemp(target, data, mode);
  try {
    await fs.rename(temp, target);
  } catch (err) {
    await fs.rm(temp, { force: true });
    throw err;
  }
  await syncDir(path.dirname(target));
}

/**
 * writeFileAtomic for the few callers that cannot await: a guest process writing its pid file
 * before it serves, the agent preparing a guest directory in the middle of a spawn.
 */
export function writeFileAtomicSync(target: string, data: string | Uint8Array, mode = FILE_MODE): void {
  const temp = tempName(target);
  const fd = openSync(temp, CREATE_NEW, mode);
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    for (let done = 0; done < bytes.length;) done += writeSync(fd, bytes, done, bytes.length - done);
    fchmodSync(fd, mode);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(temp, target);
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      // closed already
    }
    rmSync(temp, { force: true });
    throw err;
  }
  const dir = openSync(path.dirname(target), constants.O_RDONLY);
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/**
 * Creates `target` atomically and durably only if it does not exist yet; returns false (and
 * writes nothing) when it already does. link(2) is the atomic test-and-create: two writers racing
 * for the same name cannot both win, which is what a commit decision needs.
 */
export async function createFileAtomic(target: string, data: string | Uint8Array, mode = FILE_MODE): Promise<boolean> {
  const temp = await writeTemp(target, data, mode);
  try {
    await fs.link(temp, target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await fs.rm(temp, { force: true });
  }
  await syncDir(path.dirname(target));
  return true;
}

/** Makes `dir` (and its parents) and ensures `dir` itself is 0700. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: DIR_MODE });
  await fs.chmod(dir, DIR_MODE);
}

/** Removes a file durably; a file that is already gone is fine. */
export async function removeFileDurably(target: string): Promise<void> {
  await fs.rm(target, { force: true });
  await syncDir(path.dirname(target));
}
