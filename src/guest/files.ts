/** The files of a guest directory, and where a guest process's code is. State is written with src/common/atomic-file.ts. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FerryError } from '../errors.js';

/** The guest's config (no secrets), written by the agent's startGuest. */
export const CONFIG_FILE = 'guest.json';
export const CONTROL_SOCKET = 'control.sock';
export const PID_FILE = 'guest.pid';
/** The guest process's stdout and stderr. */
export const LOG_FILE = 'guest.log';

/**
 * The compiled file `relative` (to dist/) of the ferry package this module belongs to, whether it
 * runs from dist or from src (tests): guest processes always run compiled code.
 */
export function compiledEntry(relative: string): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) {
    const up = dirname(d);
    if (up === d) throw new FerryError('ERR_FERRY_INTERNAL', 'cannot find the ferry package root');
    d = up;
  }
  const file = join(d, 'dist', relative);
  if (!existsSync(file)) throw new FerryError('ERR_FERRY_INTERNAL', `${file} is missing: run \`npm run build\``);
  return file;
}
