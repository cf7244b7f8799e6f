/** The key schedule: HKDF-SHA256 as RFC 5869 defines it, checked against WebCrypto's own HKDF; the keys it hands out and wipes. */
import assert from 'node:assert/strict';
import { hkdfSync, randomBytes, webcrypto } from 'node:crypto';
import { FerryError } from '../../src/errors.js';
import { EPOCH_KEY_INFO, KeySchedule, deriveEpochKey, loadBackend } from '../../src/crypto/index.js';
import { EpochKeys } from '../../src/channel/epoch-keys.js';

/** HKDF by WebCrypto: a second implementation to hold node:crypto's to. */
async function webHkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array): Promise<Buffer> {
  const key = await webcrypto.subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  return Buffer.from(await webcrypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info }, key, 256));
}

function info(direction: number, epoch: number): Buffer {
  const b = Buffer.alloc(EPOCH_KEY_INFO.length + 5);
  b.write(EPOCH_KEY_INFO, 'latin1');
  b[EPOCH_KEY_INFO.length] = direction;
  b.writeUInt32BE(epoch, EPOCH_KEY_INFO.length + 1);
  return b;
}

describe('key schedule', () => {
  it('HKDF-SHA256 gives RFC 5869 test case 1', () => {
    const okm = hkdfSync(
      'sha256',
      Buffer.alloc(22, 0x0b),
      Buffer.from('000102030405060708090a0b0c', 'hex'),
      Buffer.from('f0f1f2f3f4f5f6f7f8f9', 'hex'),
      42,
    );
    assert.equal(Buffer.from(okm).toString('hex'), '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
  });

  it('each epoch and direction has its own key, the same as WebCrypto derives', async () => {
    const key = randomBytes(32);
    const nonce = randomBytes(8);
    const seen = new Set<string>([key.toString('hex')]);
    for (const direction of [0, 1] as const) {
      for (const epoch of [1, 2, 3, 255, 256, 0xff_ffff]) {
        const k = deriveEpochKey(key, nonce, direction, epoch);
        assert.equal(k.length, 32);
        assert.ok(k.equals(await webHkdf(key, nonce, info(direction, epoch))), `direction ${direction} epoch ${epoch}`);
        seen.add(k.toString('hex'));
      }
    }
    assert.equal(seen.size, 13, 'no two alike, none the migration key');
    assert.ok(!deriveEpochKey(key, randomBytes(8), 0, 1).equals(deriveEpochKey(key, nonce, 0, 1)), 'the nonce is the salt');
  });

  it('refuses epoch 0 (the migration key itself) and wrong sizes, with ERR_FERRY_CRYPTO', () => {
    for (const bad of [
      () => deriveEpochKey(randomBytes(32), randomBytes(8), 0, 0),
      () => deriveEpochKey(randomBytes(32), randomBytes(8), 0, 1.5),
      () => deriveEpochKey(randomBytes(16), randomBytes(8), 0, 1),
      () => deriveEpochKey(randomBytes(32), randomBytes(12), 0, 1),
    ]) {
      assert.throws(bad, (e: unknown) => e instanceof FerryError && e.code === 'ERR_FERRY_CRYPTO');
    }
  });

  it('a retired epoch key is destroyed once its last use ends; epoch 0 stays until the schedule goes', async () => {
    const node = await loadBackend('node');
    const master = randomBytes(32);
    const nonce = randomBytes(8);
    const copy = Buffer.from(master);
    const schedule = await KeySchedule.create(node, master, nonce);
    master.fill(0); // the schedule holds its own copy
    const keys = new EpochKeys(schedule, 0);
    const iv = randomBytes(12);
    const sealed = await keys.use(1, (k) => k.seal(iv, Buffer.alloc(0), Buffer.from('epoch one')));
    const direct = await node.seal(deriveEpochKey(copy, nonce, 0, 1), iv, Buffer.alloc(0), Buffer.from('epoch one'));
    assert.ok(Buffer.from(sealed).equals(Buffer.from(direct)), 'sealed under the derived key');
    const held = keys.acquire(1);
    const one = await held.key;
    keys.retireBelow(2);
    assert.equal(keys.floor, 2);
    await one.seal(iv, Buffer.alloc(0), Buffer.alloc(1)); // still held: still works
    held.release();
    await new Promise((r) => setImmediate(r));
    await assert.rejects(one.seal(iv, Buffer.alloc(0), Buffer.alloc(1)), /destroyed/);
    assert.throws(() => keys.acquire(1), /retired/);
    const zero = await keys.use(0, async (k) => k);
    await zero.seal(iv, Buffer.alloc(0), Buffer.alloc(1)); // HELLOs still seal under epoch 0
    schedule.destroy();
    await assert.rejects(zero.seal(iv, Buffer.alloc(0), Buffer.alloc(1)), /destroyed/);
    await assert.rejects(schedule.key(0, 2), /destroyed/);
  });
});
