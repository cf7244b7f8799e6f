/**
 * What only the native backend has: the CPU probe, key handles and their lifetime, batches on the
 * thread pool, and the fallback (with its one line on stderr) when the addon is missing.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { cpuFeatures, loadBackend, nativeBackend, nativeImplementations, nativeUnavailableReason } from '../../src/crypto/index.js';
import { skipBecause } from '../support/backends.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

describe('native backend', function () {
  before(function () {
    const why = nativeUnavailableReason();
    if (why !== null) skipBecause(this, 'native', why);
  });

  it('probes the same CPU features as /proc/cpuinfo lists', function () {
    let flags: Set<string>;
    try {
      const line = readFileSync('/proc/cpuinfo', 'utf8')
        .split('\n')
        .find((l) => l.startsWith('flags'));
      flags = new Set(line!.split(':')[1]!.trim().split(/\s+/));
    } catch {
      console.log('      skipped: no /proc/cpuinfo here');
      this.skip();
    }
    const f = cpuFeatures()!;
    for (const name of ['aes', 'pclmulqdq', 'avx2', 'vaes', 'vpclmulqdq', 'avx512f', 'avx512bw', 'avx512vl'] as const) {
      assert.equal(f[name], flags.has(name), name);
    }
    const vaes = f.aes && f.pclmulqdq && f.vaes && f.vpclmulqdq && f.avx2;
    assert.equal(nativeImplementations().includes('vaes-avx2'), vaes);
    assert.equal(nativeImplementations().includes('vaes-avx512'), vaes && f.avx512f && f.avx512bw && f.avx512vl);
  });

  it('is the default backend when it loads', async function () {
    const saved = process.env.FERRY_CRYPTO;
    delete process.env.FERRY_CRYPTO;
    try {
      assert.equal((await loadBackend()).name, 'native');
    } finally {
      if (saved !== undefined) process.env.FERRY_CRYPTO = saved;
    }
  });

  it('loads and seals in worker threads alongside the main thread (same bytes)', async function () {
    // The compiled module (npm test builds it first): tsx's loader does not reach eval'd workers.
    const compiled = new URL('../../dist/crypto/index.js', import.meta.url);
    if (!existsSync(compiled)) {
      console.log('      skipped: dist/ is not built (run `npm run build`)');
      this.skip();
    }
    const src = compiled.href;
    const code = `
      import { nativeBackend } from ${JSON.stringify(src)};
      import { parentPort } from 'node:worker_threads';
      const k = await nativeBackend().importKey(Buffer.alloc(32, 1));
      const [s] = await k.sealBatch([{ iv: Buffer.alloc(12), aad: Buffer.alloc(3), input: Buffer.alloc(300000, 7) }], { threads: 2 });
      k.destroy();
      parentPort.postMessage(Buffer.from(s).toString('hex'));`;
    const fromWorkers = await Promise.all(
      [1, 2].map(
        () =>
          new Promise<string>((resolve, reject) => {
            const w = new Worker(code, { eval: true, type: 'module' } as WorkerOptions);
            w.once('message', (m: string) => {
              resolve(m);
              void w.terminate();
            });
            w.once('error', reject);
          }),
      ),
    );
    const main = await nativeBackend().seal(Buffer.alloc(32, 1), Buffer.alloc(12), Buffer.alloc(3), Buffer.alloc(300000, 7));
    for (const hex of fromWorkers) assert.equal(hex, Buffer.from(main).toString('hex'));
  });

  for (const impl of nativeImplementations()) {
    describe(impl, function () {
      const backend = () => nativeBackend(impl);
      const iv = Buffer.alloc(12, 3);
      const aad = Buffer.from('header');

      it('refuses a destroyed key with ERR_FERRY_CRYPTO', async function () {
        const k = await backend().importKey(Buffer.alloc(32, 1));
        k.destroy();
        await assert.rejects(k.seal(iv, aad, Buffer.alloc(10)), { code: 'ERR_FERRY_CRYPTO' });
        k.destroy(); // twice is harmless
      });

      it('finishes a batch in flight when its key is destroyed meanwhile', async function () {
        const raw = Buffer.alloc(32, 2);
        const k = await backend().importKey(raw);
        const jobs = Array.from({ length: 8 }, (_, i) => ({ iv, aad, input: Buffer.alloc(256 * 1024, i) }));
        const pending = k.sealBatch(jobs, { threads: 2 });
        k.destroy();
        const sealed = await pending;
        const expected = await (await loadBackend('node')).sealBatch(raw, jobs);
        assert.deepEqual(
          sealed.map((s) => Buffer.from(s).toString('hex')),
          expected.map((s) => Buffer.from(s).toString('hex')),
        );
      });

      it('names the failed job of a batch on the pool and wipes every output', async function () {
        const raw = Buffer.alloc(32, 4);
        const plain = Array.from({ length: 6 }, (_, i) => Buffer.alloc(200_000, i + 1));
        const sealed = await backend().sealBatch(
          raw,
          plain.map((input) => ({ iv, aad, input })),
          { threads: 3 },
        );
        sealed[4]![100] ^= 1;
        const outputs = plain.map((p) => Buffer.alloc(p.length, 0xee));
        await assert.rejects(
          backend().openBatch(
            raw,
            sealed.map((input, i) => ({ iv, aad, input, output: outputs[i] })),
            { threads: 3 },
          ),
          (err: { code?: string; detail?: { jobIndex?: number } }) => err.code === 'ERR_FERRY_AUTH' && err.detail?.jobIndex === 4,
        );
        for (const [i, o] of outputs.entries()) {
          assert.ok(
            o.every((b) => b === 0 || b === 0xee),
            `output ${i} holds no plaintext`,
          );
        }
      });

      it('refuses an output that overlaps its input askew, and odd thread counts', async function () {
        const k = await backend().importKey(Buffer.alloc(32, 5));
        try {
          const buf = Buffer.alloc(100);
          await assert.rejects(k.seal(iv, aad, buf.subarray(0, 50), buf.subarray(10, 76)), RangeError);
          await assert.rejects(k.seal(iv, aad, buf.subarray(0, 50), buf.subarray(0, 50)), RangeError); // too short
          await assert.rejects(k.sealBatch([{ iv, aad, input: buf }], { threads: 0 }), RangeError);
        } finally {
          k.destroy();
        }
      });
    });
  }
});

describe('without the addon', function () {
  // A real child process, with the addon's path pointed at nothing.
  function run(code: string, env: Record<string, string>) {
    return spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: root,
      env: { ...process.env, FERRY_NATIVE_ADDON: '/nonexistent/ferry_native.node', ...env },
      encoding: 'utf8',
      timeout: 60_000,
    });
  }

  it('falls back to node:crypto, telling its listeners why, once, and printing nothing itself', function () {
    const code = `
      import { loadBackend, onCryptoFallback, zeroPages } from './src/crypto/index.ts';
      onCryptoFallback((notice) => console.log('early: ' + notice));
      const b = await loadBackend();
      const sealed = await b.seal(Buffer.alloc(32), Buffer.alloc(12), Buffer.alloc(0), Buffer.from('x'));
      await loadBackend();
      console.log(b.name, sealed.length, zeroPages(Buffer.alloc(8192)).length);
      onCryptoFallback((notice) => console.log('late: ' + notice));`;
    const r = run(code, { FERRY_CRYPTO: '' });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 3, r.stdout);
    assert.match(lines[0]!, /^early: using node:crypto.*not built.*npm run build:native/);
    assert.equal(lines[1], 'node 17 2');
    // A listener that comes after the fallback hears it at once.
    assert.equal(lines[2], lines[0]!.replace(/^early/, 'late'));
    assert.equal(r.stderr, '');
  });

  it('refuses FERRY_CRYPTO=native with ERR_FERRY_CRYPTO and the reason', function () {
    const code = `
      import { loadBackend } from './src/crypto/index.ts';
      try { await loadBackend(); } catch (e) { console.log(e.code, e.message); }`;
    const r = run(code, { FERRY_CRYPTO: 'native' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^ERR_FERRY_CRYPTO .*not built/);
  });
});
