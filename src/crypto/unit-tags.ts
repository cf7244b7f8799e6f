/**
 * Keyed tags of guest pages and disk blocks for `--verify`: the AES-256-GCM tag of an empty
 * message whose additional data is the unit, under a key of the migration's own and a fixed IV.
 * That tag is GHASH over the unit, masked by one encrypted block: a universal hash under a secret
 * key, so two different units collide with probability at most (their length / 16) / 2^128 for
 * any contents chosen without the key (docs/migration.md, "Verifying a move").
 *
 * Synchronous, for the hashing that runs beside a migration: the addon tags a run of pages in one
 * call (GHASH alone, no counter mode), many times faster than node:crypto's SHA-256 a page;
 * node:crypto's GCM gives the same bytes where the addon is missing.
 */
import { createCipheriv } from 'node:crypto';
import { KEY_BYTES } from '../common/secrets.js';
import { FerryError } from '../errors.js';
import type { GcmImplementation, KeyHandle, NativeAddon } from './native-addon.js';

export const UNIT_TAG_BYTES = 16;
export const UNIT_TAG_IV_BYTES = 12;
const NO_BYTES = new Uint8Array(0);

export interface UnitTagger {
  /** Which code tags: the addon's GCM implementation, or node:crypto. */
  readonly implementation: string;
  /** Writes the tag of `data` under `iv` (12 bytes) into `out` (16 bytes). */
  tag(iv: Uint8Array, data: Uint8Array, out: Uint8Array): void;
  /** Tags each `unitSize` piece of `data` (the last may be shorter) into `out`, 16 bytes each. */
  tagUnits(iv: Uint8Array, data: Uint8Array, unitSize: number, out: Uint8Array): void;
  /**
   * Tags the units of `base` (each `unitSize` bytes, the last may be shorter) that `indexes`
   * names, unit i's tag into out[16 i, 16 i + 16): one call for scattered units.
   */
  tagUnitsAt(iv: Uint8Array, base: Uint8Array, unitSize: number, indexes: Uint32Array, out: Uint8Array): void;
  /** Wipes the key. */
  destroy(): void;
}

function checkKeyBytes(key: Uint8Array): void {
  if (key.length !== KEY_BYTES) throw new FerryError('ERR_FERRY_CRYPTO', `a unit tagger needs a ${KEY_BYTES}-byte key`);
}

function checkTagArgs(iv: Uint8Array, out: Uint8Array, units = 1): void {
  if (iv.length !== UNIT_TAG_IV_BYTES || out.length !== units * UNIT_TAG_BYTES) {
    throw new FerryError('ERR_FERRY_CRYPTO', `a unit tag takes a ${UNIT_TAG_IV_BYTES}-byte IV into ${UNIT_TAG_BYTES} bytes a unit`);
  }
}

function unitsIn(data: Uint8Array, unitSize: number): number {
  if (!Number.isSafeInteger(unitSize) || unitSize <= 0)
    throw new FerryError('ERR_FERRY_CRYPTO', `unit size ${unitSize} is not a positive integer`);
  return Math.ceil(data.length / unitSize);
}

function checkScatteredArgs(iv: Uint8Array, base: Uint8Array, unitSize: number, indexes: Uint32Array, out: Uint8Array): void {
  const units = unitsIn(base, unitSize);
  if (iv.length !== UNIT_TAG_IV_BYTES) throw new FerryError('ERR_FERRY_CRYPTO', `a unit tag takes a ${UNIT_TAG_IV_BYTES}-byte IV`);
  for (const u of indexes) {
    if (u >= units || out.length < (u + 1) * UNIT_TAG_BYTES) {
      throw new FerryError('ERR_FERRY_CRYPTO', `unit ${u} is outside the ${units} units or their ${out.length / UNIT_TAG_BYTES} tags`);
    }
  }
}

export class NativeUnitTagger implements UnitTagger {
  private handle: KeyHandle | null;

  constructor(
    private readonly addon: NativeAddon,
    key: Uint8Array,
    readonly implementation: GcmImplementation,
  ) {
    checkKeyBytes(key);
    this.handle = addon.keyCreate(key, implementation);
  }

  tag(iv: Uint8Array, data: Uint8Array, out: Uint8Array): void {
    if (!this.handle) throw new FerryError('ERR_FERRY_CRYPTO', 'the unit tagger was destroyed');
    checkTagArgs(iv, out);
    this.addon.seal(this.handle, iv, data, NO_BYTES, out);
  }

  tagUnits(iv: Uint8Array, data: Uint8Array, unitSize: number, out: Uint8Array): void {
    if (!this.handle) throw new FerryError('ERR_FERRY_CRYPTO', 'the unit tagger was destroyed');
    checkTagArgs(iv, out, unitsIn(data, unitSize));
    this.addon.tagUnits(this.handle, iv, data, unitSize, out);
  }

  tagUnitsAt(iv: Uint8Array, base: Uint8Array, unitSize: number, indexes: Uint32Array, out: Uint8Array): void {
    if (!this.handle) throw new FerryError('ERR_FERRY_CRYPTO', 'the unit tagger was destroyed');
    checkScatteredArgs(iv, base, unitSize, indexes, out);
    this.addon.tagUnitsAt(this.handle, iv, base, unitSize, indexes, out);
  }

  destroy(): void {
    if (this.handle) this.addon.keyDestroy(this.handle);
    this.handle = null;
  }
}

export class NodeUnitTagger implements UnitTagger {
  readonly implementation = 'node';
  private key: Buffer | null;

  constructor(key: Uint8Array) {
    checkKeyBytes(key);
    this.key = Buffer.from(key);
  }

  tag(iv: Uint8Array, data: Uint8Array, out: Uint8Array): void {
    if (!this.key) throw new FerryError('ERR_FERRY_CRYPTO', 'the unit tagger was destroyed');
    checkTagArgs(iv, out);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(data);
    cipher.final();
    out.set(cipher.getAuthTag());
  }

  tagUnits(iv: Uint8Array, data: Uint8Array, unitSize: number, out: Uint8Array): void {
    const n = unitsIn(data, unitSize);
    checkTagArgs(iv, out, n);
    for (let i = 0; i < n; i++) {
      const unit = data.subarray(i * unitSize, Math.min((i + 1) * unitSize, data.length));
      this.tag(iv, unit, out.subarray(i * UNIT_TAG_BYTES, (i + 1) * UNIT_TAG_BYTES));
    }
  }

  tagUnitsAt(iv: Uint8Array, base: Uint8Array, unitSize: number, indexes: Uint32Array, out: Uint8Array): void {
    checkScatteredArgs(iv, base, unitSize, indexes, out);
    for (const u of indexes) {
      const unit = base.subarray(u * unitSize, Math.min((u + 1) * unitSize, base.length));
      this.tag(iv, unit, out.subarray(u * UNIT_TAG_BYTES, (u + 1) * UNIT_TAG_BYTES));
    }
  }

  destroy(): void {
    this.key?.fill(0);
    this.key = null;
  }
}
