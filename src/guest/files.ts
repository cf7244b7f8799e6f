/** The files of a guest directory, and the one way ferry writes small state files. */
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** The guest's config (no secrets), written by the agent's startGuest. */
export const CONFIG_FILE = 'guest.json';
export const CONTROL_SOCKET = 'control.sock';
export const PID_FILE = 'guest.pid';
/** The guest process's stdout and stderr. */
export const LOG_FILE = 'guest.log';

/** Writes `data` to `path` atomically: temp file (mode 0600), fsync, rename, fsync of the directory. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dfd = openSync(dirname(path), 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}
