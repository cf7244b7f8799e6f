/**
 * Per-migration key material. The coordinator is the trusted third party: it draws a fresh 256-bit
 * key and 64-bit nonce from the CSPRNG for every migration, hands them to both agents over mTLS (as
 * one raw secret trailer, `bytes`, never a string) and wipes them as soon as both requests are
 * written. Key material is never logged: toJSON and inspection print a redaction marker.
 */
import { randomBytes, randomFillSync } from 'node:crypto';
import { inspect } from 'node:util';
import { KEY_BYTES, SECRET_BYTES } from '../common/secrets.js';

export class MigrationKey {
  /** Key then nonce, as the control API's secret trailer carries them. */
  readonly bytes: Buffer;
  /** Views into `bytes`. */
  readonly key: Buffer;
  readonly nonce: Buffer;
  private wiped = false;

  private constructor(bytes: Buffer) {
    this.bytes = bytes;
    this.key = bytes.subarray(0, KEY_BYTES);
    this.nonce = bytes.subarray(KEY_BYTES);
  }

  static generate(): MigrationKey {
    const bytes = Buffer.alloc(SECRET_BYTES);
    randomFillSync(bytes);
    return new MigrationKey(bytes);
  }

  /** Zeroes key and nonce. Safe to call more than once. */
  wipe(): void {
    this.bytes.fill(0);
    this.wiped = true;
  }

  get isWiped(): boolean {
    return this.wiped;
  }

  toJSON(): string {
    return '[migration key redacted]';
  }

  [inspect.custom](): string {
    return 'MigrationKey [redacted]';
  }
}

/** A migration id: time-ordered and unique, safe in file names and HELLO frames. */
// eslint-disable-next-line no-restricted-properties -- the id carries the date it was made
export function newMigrationId(now = Date.now()): string {
  return `m-${now.toString(36)}-${randomBytes(6).toString('hex')}`;
}
