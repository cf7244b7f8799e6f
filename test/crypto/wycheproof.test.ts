/**
 * Project Wycheproof's AES-GCM vectors (test/vectors/wycheproof, Apache-2.0, see SOURCE.txt):
 * every 256-bit-key case with a 96-bit IV, valid and invalid, through every backend; every case
 * with another IV size must be refused with a clear error.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { forEachBackend } from '../support/backends.js';

interface Case {
  tcId: number;
  comment: string;
  key: string;
  iv: string;
  aad: string;
  msg: string;
  ct: string;
  tag: string;
  result: 'valid' | 'invalid' | 'acceptable';
  flags: string[];
}
interface Group {
  keySize: number;
  ivSize: number;
  tagSize: number;
  tests: Omit<Case, 'key' | 'iv'>[] & Case[];
}

const file = new URL('../vectors/wycheproof/aes_gcm_test.json', import.meta.url);
const groups = (JSON.parse(readFileSync(file, 'utf8')) as { testGroups: Group[] }).testGroups;
const hex = (s: string) => Buffer.from(s, 'hex');
const cases96 = groups.filter((g) => g.keySize === 256 && g.ivSize === 96).flatMap((g) => g.tests);
const casesOtherIv = groups.filter((g) => g.keySize === 256 && g.ivSize !== 96).flatMap((g) => g.tests);

describe('Wycheproof vector file', function () {
  it('has the 256-bit, 96-bit-IV cases we rely on, valid and invalid', function () {
    assert.equal(cases96.length, 66);
    assert.ok(cases96.some((c) => c.result === 'valid'));
    assert.ok(cases96.some((c) => c.result === 'invalid'));
    assert.ok(casesOtherIv.length > 0);
  });
});

forEachBackend('Wycheproof AES-256-GCM', (backend) => {
  it('seals every valid 96-bit-IV case to the expected ciphertext and tag', async function () {
    for (const c of cases96.filter((t) => t.result === 'valid')) {
      const sealed = await backend().seal(hex(c.key), hex(c.iv), hex(c.aad), hex(c.msg));
      assert.equal(Buffer.from(sealed).toString('hex'), c.ct + c.tag, `tcId ${c.tcId} (${c.comment})`);
    }
  });

  it('opens every valid case and rejects every invalid one with ERR_FERRY_AUTH', async function () {
    for (const c of cases96) {
      const sealed = Buffer.concat([hex(c.ct), hex(c.tag)]);
      const opening = backend().open(hex(c.key), hex(c.iv), hex(c.aad), sealed);
      if (c.result === 'valid') {
        const plain = await opening;
        assert.equal(Buffer.from(plain).toString('hex'), c.msg, `tcId ${c.tcId}`);
      } else {
        await assert.rejects(opening, { code: 'ERR_FERRY_AUTH' }, `tcId ${c.tcId} (${c.comment}) must not open`);
      }
    }
  });

  it('refuses every IV size other than 96 bits with ERR_FERRY_CRYPTO', async function () {
    for (const c of casesOtherIv) {
      await assert.rejects(
        backend().seal(hex(c.key), hex(c.iv), hex(c.aad), hex(c.msg)),
        (err: { code?: string; message?: string }) => err.code === 'ERR_FERRY_CRYPTO' && /96 bits/.test(err.message ?? ''),
        `tcId ${c.tcId}`,
      );
    }
  });

  it('opens in the batch form and wipes every output when one job fails', async function () {
    const valid = cases96.filter((t) => t.result === 'valid' && t.msg.length > 0).slice(0, 4);
    const key = hex(valid[0]!.key);
    const jobs = valid
      .filter((c) => c.key === valid[0]!.key)
      .map((c) => ({ iv: hex(c.iv), aad: hex(c.aad), input: Buffer.concat([hex(c.ct), hex(c.tag)]) }));
    const outs = jobs.map((j) => Buffer.alloc(j.input.length - 16, 0xee));
    const opened = await backend().openBatch(
      key,
      jobs.map((j, i) => ({ ...j, output: outs[i] })),
    );
    assert.equal(opened.length, jobs.length);
    const bad = jobs.map((j) => ({ ...j, input: Buffer.from(j.input) }));
    bad[bad.length - 1]!.input[0]! ^= 1;
    const outs2 = bad.map((j) => Buffer.alloc(j.input.length - 16, 0xee));
    await assert.rejects(
      backend().openBatch(
        key,
        bad.map((j, i) => ({ ...j, output: outs2[i] })),
      ),
      {
        code: 'ERR_FERRY_AUTH',
      },
    );
    for (const o of outs2)
      assert.ok(
        o.every((b) => b === 0 || b === 0xee),
        'no plaintext left in outputs',
      );
  });
});
