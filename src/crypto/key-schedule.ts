/**
 * A migration's key schedule: the key of each key epoch of each direction of its channel, derived
 * from the migration key with HKDF-SHA256 (RFC 5869), so both sides reach the same keys without a
 * word on the wire and a key of one epoch says nothing about another's (docs/protocol.md, "Key
 * epochs"). The derivation is the same code whatever backend seals, so every backend seals under
 * the same bytes; only AES-GCM itself differs between them.
 *
 *   epoch 0:  the migration key K itself (both directions, as before key update existed)
 *   epoch e:  HKDF-SHA256(IKM = K, salt = the migration's nonce N,
 *                         info = "ferry channel key epoch" ‖ u8 direction ‖ u32be e, L = 32)
 *
 * direction 0 is source → destination, 1 destination → source.
 */
import { hkdfSync } from 'node:crypto';
import { FerryError } from '../errors.js';
import { KEY_BYTES, NONCE_BYTES } from '../common/secrets.js';
import type { AeadKey, Backend } from './backend.js';

export type Direction = 0 | 1;

export const EPOCH_KEY_INFO = 'ferry channel key epoch';

/** The key bytes of epoch `epoch` >= 1 of `direction`; the caller wipes them once imported. */
export function deriveEpochKey(master: Uint8Array, nonce: Uint8Array, direction: Direction, epoch: number): Buffer {
  if (master.length !== KEY_BYTES || nonce.length !== NONCE_BYTES) {
    throw new FerryError('ERR_FERRY_CRYPTO', `key schedule needs a ${KEY_BYTES}-byte key and a ${NONCE_BYTES}-byte nonce`);
  }
  if (!Number.isInteger(epoch) || epoch < 1 || epoch > 0xffff_ffff) {
    throw new FerryError('ERR_FERRY_CRYPTO', `key epoch ${epoch} is not derived (epoch 0 is the migration key)`);
  }
  const info = Buffer.alloc(EPOCH_KEY_INFO.length + 5);
  info.write(EPOCH_KEY_INFO, 0, 'latin1');
  info[EPOCH_KEY_INFO.length] = direction;
  info.writeUInt32BE(epoch, EPOCH_KEY_INFO.length + 1);
  return Buffer.from(hkdfSync('sha256', master, nonce, info, KEY_BYTES));
}

/**
 * The migration key held for one channel: its own copy of K (the input every later epoch is derived
 * from), epoch 0's imported key, and the backend that imports the rest. destroy() wipes K and
 * epoch 0's key; each derived key is the owner's to destroy.
 */
export class KeySchedule {
  private master: Buffer | null;
  private epochZero: AeadKey | null;

  private constructor(
    private readonly backend: Backend,
    master: Buffer,
    epochZero: AeadKey,
    private readonly nonce: Buffer,
  ) {
    this.master = master;
    this.epochZero = epochZero;
  }

  /** Copies `key` and `nonce`: the caller may wipe its own buffers once this resolves. */
  static async create(backend: Backend, key: Uint8Array, nonce: Uint8Array): Promise<KeySchedule> {
    const master = Buffer.from(key);
    try {
      return new KeySchedule(backend, master, await backend.importKey(master), Buffer.from(nonce));
    } catch (err) {
      master.fill(0);
      throw err;
    }
  }

  get live(): boolean {
    return this.master !== null;
  }

  /** Epoch 0's key (shared, never destroyed by a caller), or a freshly imported key of a later epoch. */
  async key(direction: Direction, epoch: number): Promise<AeadKey> {
    if (!this.master || !this.epochZero) throw new FerryError('ERR_FERRY_CRYPTO', 'the key schedule was destroyed');
    if (epoch === 0) return this.epochZero;
    const bytes = deriveEpochKey(this.master, this.nonce, direction, epoch);
    try {
      return await this.backend.importKey(bytes);
    } finally {
      bytes.fill(0);
    }
  }

  destroy(): void {
    this.master?.fill(0);
    this.master = null;
    this.epochZero?.destroy();
    this.epochZero = null;
  }
}
