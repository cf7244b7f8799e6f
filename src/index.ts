/** ferry's library surface. */
export * from './errors.js';
export * as crypto from './crypto/index.js';
