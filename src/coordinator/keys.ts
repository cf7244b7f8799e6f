/**
 * Per-migration key material. The coordinator is the trusted third party: it draws a fresh 256-bit
 * key and 64-bit nonce from the CSPRNG for every migration, hands them to both agents over mTLS,
 * and wipes its copies when the migration ends. Key material is never logged: toJSON and
 * inspection print a redaction marker.
 */
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';

export const MIGRATION_KEY_BYTES = 32;
export const MIGRATION_NONCE_BYTES = 8;

export class MigrationKey {
  readonly key: Buffer;
  readonly nonce: Buffer;
  private wiped = false;

  private constructor(key: Buffer, nonce: Buffer) {
    this.key = key;
    this.nonce = nonce;
  }

  static generate(): MigrationKey {
    return new MigrationKey(randomBytes(MIGRATION_KEY_BYTES), randomBytes(MIGRATION_NONCE_BYTES));
  }

  /** Zeroes key and nonce. Safe to call more than once. */
  wipe(): void {
    this.key.fill(0);
    this.nonce.fill(0);
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
export function newMigrationId(now = Date.now()): string {
  return `m-${now.toString(36)}-${randomBytes(6).toString('hex')}`;
}
