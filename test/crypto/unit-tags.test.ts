/**
 * The tags verify keeps of pages and blocks (src/crypto/unit-tags.ts): a public vector's tag of an
 * empty message, the same bytes from node:crypto and every native implementation for units of
 * every size a ledger tags (up to a 64 KiB block), one call for a run the same as a call a unit,
 * and a key that is refused or wiped.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { nativeImplementations, nativeUnavailableReason } from '../../src/crypto/index.js';
import { loadAddon } from '../../src/crypto/native-addon.js';
import { NativeUnitTagger, NodeUnitTagger, type UnitTagger } from '../../src/crypto/unit-tags.js';
import type { FerryError } from '../../src/errors.js';

interface Case {
  tcId: number;
  key: string;
  iv: string;
  aad: string;
  msg: string;
  tag: string;
  result: string;
}
const file = new URL('../vectors/wycheproof/aes_gcm_test.json', import.meta.url);
const groups = (JSON.parse(readFileSync(file, 'utf8')) as { testGroups: { keySize: number; ivSize: number; tests: Case[] }[] }).testGroups;
const emptyMessages = groups
  .filter((g) => g.keySize === 256 && g.ivSize === 96)
  .flatMap((g) => g.tests)
  .filter((t) => t.msg === '' && t.result === 'valid');

/** Every tagger that can run here, under `key`; the reason the native ones cannot, printed. */
function taggers(key: Uint8Array): UnitTagger[] {
  const out: UnitTagger[] = [new NodeUnitTagger(key)];
  const reason = nativeUnavailableReason();
  if (reason !== null) console.log(`      native taggers not compared: ${reason}`);
  else for (const impl of nativeImplementations()) out.push(new NativeUnitTagger(loadAddon().addon!, key, impl));
  return out;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('verify unit tags', () => {
  it('give the Wycheproof tag of an empty message with additional data, in every implementation', () => {
    assert.ok(emptyMessages.length >= 2, 'the vector file has empty-message cases');
    for (const c of emptyMessages) {
      for (const t of taggers(Buffer.from(c.key, 'hex'))) {
        const out = Buffer.alloc(16);
        t.tag(Buffer.from(c.iv, 'hex'), Buffer.from(c.aad, 'hex'), out);
        assert.equal(out.toString('hex'), c.tag, `tcId ${c.tcId}, ${t.implementation}`);
        t.destroy();
      }
    }
  });

  it('are byte-identical across node:crypto and every native implementation, units up to a 64 KiB block', () => {
    const unit = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc.uint8Array({ minLength: 4096, maxLength: 4096 }),
      fc.uint8Array({ minLength: 60_000, maxLength: 65_536 }),
    );
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 12, maxLength: 12 }),
        unit,
        (key, iv, data) => {
          const all = taggers(key);
          const tags = all.map((t) => {
            const out = new Uint8Array(16);
            t.tag(iv, data, out);
            t.destroy();
            return hex(out);
          });
          for (let i = 1; i < tags.length; i++) assert.equal(tags[i], tags[0], `${all[i]!.implementation} differs from node`);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('tag a run of units in one call as they tag one at a time, a short last unit included', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 1, maxLength: 20_000 }),
        fc.integer({ min: 1, max: 5000 }),
        (key, data, unitSize) => {
          const iv = new Uint8Array(12).fill(3);
          const n = Math.ceil(data.length / unitSize);
          const one = new NodeUnitTagger(key);
          const expected = Buffer.alloc(n * 16);
          for (let i = 0; i < n; i++) one.tag(iv, data.subarray(i * unitSize, (i + 1) * unitSize), expected.subarray(i * 16, (i + 1) * 16));
          one.destroy();
          for (const t of taggers(key)) {
            const out = Buffer.alloc(n * 16);
            t.tagUnits(iv, data, unitSize, out);
            t.destroy();
            assert.equal(out.toString('hex'), expected.toString('hex'), t.implementation);
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('tags units scattered over a buffer into their own places, each as tagUnits would', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 1, maxLength: 20_000 }),
        fc.integer({ min: 1, max: 3000 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        (key, data, unitSize, picks) => {
          const iv = new Uint8Array(12).fill(5);
          const n = Math.ceil(data.length / unitSize);
          const all = Buffer.alloc(n * 16);
          new NodeUnitTagger(key).tagUnits(iv, data, unitSize, all);
          const indexes = Uint32Array.from(picks.map((p) => p % n));
          for (const t of taggers(key)) {
            const out = Buffer.alloc(n * 16, 0xee);
            t.tagUnitsAt(iv, data, unitSize, indexes, out);
            t.destroy();
            for (let u = 0; u < n; u++) {
              const want = indexes.includes(u) ? all.subarray(u * 16, (u + 1) * 16) : Buffer.alloc(16, 0xee);
              assert.equal(out.subarray(u * 16, (u + 1) * 16).toString('hex'), want.toString('hex'), `${t.implementation} unit ${u}`);
            }
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('refuses a key of the wrong size, a wrong IV or tag size, and any use once destroyed', () => {
    const crypto = (e: FerryError) => e.code === 'ERR_FERRY_CRYPTO';
    assert.throws(() => new NodeUnitTagger(new Uint8Array(16)), crypto);
    for (const t of taggers(new Uint8Array(32).fill(7))) {
      assert.throws(() => t.tag(new Uint8Array(8), new Uint8Array(4), new Uint8Array(16)), crypto, t.implementation);
      assert.throws(() => t.tag(new Uint8Array(12), new Uint8Array(4), new Uint8Array(15)), crypto, t.implementation);
      assert.throws(() => t.tagUnits(new Uint8Array(12), new Uint8Array(40), 16, new Uint8Array(32)), crypto, t.implementation);
      assert.throws(() => t.tagUnits(new Uint8Array(12), new Uint8Array(40), 0, new Uint8Array(48)), crypto, t.implementation);
      const at = (indexes: number[], out: number) => () =>
        t.tagUnitsAt(new Uint8Array(12), new Uint8Array(40), 16, Uint32Array.from(indexes), new Uint8Array(out));
      assert.throws(at([3], 64), crypto, t.implementation); // 40 bytes hold units 0-2
      assert.throws(at([2], 32), crypto, t.implementation); // unit 2's tag would end at 48
      assert.throws(() => t.tagUnitsAt(new Uint8Array(11), new Uint8Array(40), 16, new Uint32Array(1), new Uint8Array(48)), crypto);
      t.destroy();
      assert.throws(() => t.tag(new Uint8Array(12), new Uint8Array(4), new Uint8Array(16)), crypto, t.implementation);
    }
  });
});
