/** The synthetic driver, as the agent sees it (src/guest/driver.ts): a ferry process per guest. */
import { FerryError } from '../../errors.js';
import type { GuestDriver } from '../driver.js';
import { compiledEntry } from '../files.js';
import { formatBytes } from '../../common/units.js';
import { formatWorkload, SYNTHETIC_FIELDS } from './config.js';

export const syntheticDriver: GuestDriver = {
  name: 'synthetic',
  configFields: SYNTHETIC_FIELDS,
  createFields: SYNTHETIC_FIELDS,
  create: async (request) => {
    if (request.driver !== 'synthetic') throw new FerryError('ERR_FERRY_INTERNAL', 'not a synthetic guest');
    return request;
  },
  admit: async () => {},
  // The guest is its process.
  outlivesProcess: () => false,
  // Nothing outlives a synthetic guest's process: it is the guest.
  endLeft: async () => false,
  entry: () => compiledEntry('guest/synthetic/main.js'),
  describe: (c) =>
    c.driver === 'synthetic' ? `${c.diskBytes ? `${formatBytes(c.diskBytes)} disk, ` : ''}workload ${formatWorkload(c.workload)}` : '',
  availability: async () => ({ available: true, detail: 'built in' }),
};
