/** The synthetic driver, as the agent sees it (src/guest/driver.ts): a ferry process per guest. */
import type { GuestDriver } from '../driver.js';
import { compiledEntry } from '../files.js';
import { SYNTHETIC_FIELDS } from './config.js';

export const syntheticDriver: GuestDriver = {
  name: 'synthetic',
  configFields: SYNTHETIC_FIELDS,
  entry: () => compiledEntry('guest/synthetic/main.js'),
  availability: async () => ({ available: true, detail: 'built in' }),
};
