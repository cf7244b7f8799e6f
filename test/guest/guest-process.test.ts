/**
 * Real guest processes: start, pause, resume, throttle, digest, stop; surviving the death of the
 * process that spawned them and being re-attached; bad requests refused with coded errors.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { freemem } from 'node:os';
import { join } from 'node:path';
import { attachGuest, startGuest, type GuestClient } from '../../src/guest/index.js';
import { FerryError } from '../../src/errors.js';
import { sleep } from '../../src/common/async.js';
import { GuestSandbox } from '../support/guests.js';
import { alive } from '../support/processes.js';
import { waitUntil } from '../support/wait.js';

describe('synthetic guest process', function () {
  this.timeout(60_000);
  const box = new GuestSandbox();
  after(() => box.cleanup());

  it('runs an idle guest with a disk: pause, digest, resume, stop', async () => {
    const dir = box.dir();
    const g = await startGuest(dir, box.config({ kind: 'idle' }, 64, 8));
    assert.ok(alive(g.pid));
    await waitUntil(async () => (await g.status()).workloadReady, 10_000, 'the idle fill');
    assert.equal(Number(readFileSync(join(dir, 'guest.pid'), 'utf8')), g.pid);
    const s = await g.status();
    assert.equal(s.state, 'running');
    assert.equal(s.memoryBytes, 64 << 20);
    assert.equal(s.diskBytes, 8 << 20);
    await g.pause();
    assert.equal((await g.status()).state, 'paused');
    const d1 = await g.digest();
    assert.match(d1, /^[0-9a-f]{64}$/);
    await g.resume();
    await sleep(200);
    // Idle: memory filled once and then untouched, so the digest stays.
    await g.pause();
    assert.equal(await g.digest(), d1);
    await g.stop();
    assert.ok(!alive(g.pid));
    assert.ok(!existsSync(join(dir, 'control.sock')));
    assert.equal(await attachGuest(dir), null);
  });

  it('serves a kv workload at its rate, slowed by the throttle, frozen by pause', async () => {
    const g = await startGuest(box.dir(), box.config({ kind: 'kv', getsPerSecond: 4000, setsPerSecond: 1000 }));
    try {
      await waitUntil(async () => (await g.status()).opsPerSecond > 4000, 5000, 'kv to reach its rate');
      const full = (await g.status()).opsPerSecond;
      assert.ok(full <= 5500, `ops/s ${full} exceeds the paced 5000`);
      await g.throttle(60);
      await sleep(2200);
      const throttled = (await g.status()).opsPerSecond;
      assert.ok(throttled < full * 0.6, `throttled ${throttled} vs full ${full}`);
      assert.equal((await g.status()).throttlePercent, 60);
      await g.pause();
      const d1 = await g.digest();
      await sleep(300);
      assert.equal(await g.digest(), d1, 'a paused guest must not write');
      await g.resume();
      await sleep(300);
      await g.pause();
      assert.notEqual(await g.digest(), d1, 'a resumed kv guest writes');
    } finally {
      await g.stop();
    }
  });

  it('outlives the process that spawned it, and a new client re-attaches', async () => {
    const dir = box.dir();
    const script = `
      import { startGuest } from ${JSON.stringify(new URL('../../src/guest/index.ts', import.meta.url).href)};
      const g = await startGuest(${JSON.stringify(dir)}, ${JSON.stringify(box.config({ kind: 'dirty', bytesPerSecond: 4 << 20 }))});
      process.stdout.write(String(g.pid) + '\\n');
      setInterval(() => {}, 1000);
    `;
    const agent = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const pid = await new Promise<number>((resolve, reject) => {
      agent.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      agent.once('exit', (code) => reject(new Error(`spawner exited ${code}`)));
    });
    agent.kill('SIGKILL');
    await new Promise((r) => agent.once('exit', r));
    await sleep(1200);
    assert.ok(alive(pid), 'the guest died with its spawner');
    const g = (await attachGuest(dir)) as GuestClient;
    assert.ok(g, 'nothing answers on the control socket');
    assert.equal(g.pid, pid);
    const s = await g.status();
    assert.equal(s.state, 'running');
    await waitUntil(async () => (await g.status()).opsPerSecond > 0, 5000, 'the workload to keep running');
    await g.stop();
    assert.ok(!alive(pid));
  });

  it('refuses a second guest process in the same directory', async () => {
    const dir = box.dir();
    const g = await startGuest(dir, box.config({ kind: 'idle' }, 16));
    try {
      await assert.rejects(startGuest(dir, box.config({ kind: 'idle' }, 16)), (e: FerryError) => e.code === 'ERR_FERRY_REFUSED');
    } finally {
      await g.stop();
    }
  });

  it('answers bad requests with coded errors and changes nothing', async () => {
    const dir = box.dir();
    const g = await startGuest(dir, box.config({ kind: 'idle' }, 16));
    try {
      await assert.rejects(g.request('no-such-method' as never, {} as never), (e: FerryError) => e.code === 'ERR_FERRY_INPUT');
      await assert.rejects(g.throttle(150), (e: FerryError) => e.code === 'ERR_FERRY_INPUT');
      await assert.rejects(
        g.request('migrate-out', { migrationId: 'm1', mode: 'encrypted', streams: 1, networks: ['127.0.0.1:1'] }),
        (e: FerryError) => e.code === 'ERR_FERRY_INPUT' && /key/.test(e.message),
      );
      await assert.rejects(g.commit(), (e: FerryError) => e.code === 'ERR_FERRY_REFUSED');
      // A field its method does not take: refused before the handler runs (stop would have stopped).
      await assert.rejects(
        g.request('stop', { force: true } as never),
        (e: FerryError) => e.code === 'ERR_FERRY_INPUT' && /stop\.force: unknown field/.test(e.message),
      );
      await assert.rejects(
        g.request('throttle', { percent: 10, step: 5 } as never),
        (e: FerryError) => e.code === 'ERR_FERRY_INPUT' && /throttle\.step: unknown field/.test(e.message),
      );
      await assert.rejects(
        g.request('migrate-out', { migrationId: 'm1', mode: 'encrypted', streams: 1, networks: ['127.0.0.1:1'], verfy: true } as never),
        (e: FerryError) => e.code === 'ERR_FERRY_INPUT' && /verfy/.test(e.message),
      );
      assert.equal((await g.status()).throttlePercent, 0);
      await assert.rejects(g.resumeAfterAbort(), (e: FerryError) => e.code === 'ERR_FERRY_REFUSED');
      // Raw garbage and an over-long line: an error reply, then the connection closes.
      for (const bytes of [Buffer.from('not json\n'), Buffer.alloc(70 * 1024, 0x61)]) {
        const reply = await new Promise<string>((resolve) => {
          const s = createConnection(join(dir, 'control.sock'));
          let got = '';
          s.on('data', (d) => (got += d.toString()));
          s.on('close', () => resolve(got));
          s.on('error', () => {});
          s.write(bytes);
        });
        assert.match(reply, /"ok":false.*ERR_FERRY_INPUT/);
      }
      assert.equal((await g.status()).state, 'running');
    } finally {
      await g.stop();
    }
  });

  it('refuses bad configs before starting anything', async () => {
    const dir = box.dir();
    await assert.rejects(
      startGuest(dir, { ...box.config({ kind: 'idle' }), memoryBytes: 1000 }),
      (e: FerryError) => e.code === 'ERR_FERRY_INPUT',
    );
    await assert.rejects(
      startGuest(dir, { ...box.config({ kind: 'idle' }), name: 'Bad Name' }),
      (e: FerryError) => e.code === 'ERR_FERRY_INPUT',
    );
    await assert.rejects(
      startGuest(dir, box.config({ kind: 'dirty', bytesPerSecond: -1 })),
      (e: FerryError) => e.code === 'ERR_FERRY_INPUT',
    );
    assert.ok(!existsSync(dir));
  });

  it('runs an 8 GiB guest, allocating memory only as it is written', async function () {
    const need = 10 * 2 ** 30;
    if (freemem() < need) {
      console.log(`      skipped: ${Math.round(freemem() / 2 ** 30)} GiB free, this check wants 10 GiB`);
      this.skip();
    }
    const g = await startGuest(box.dir(), box.config({ kind: 'dirty', bytesPerSecond: 8 << 20 }, 8192));
    try {
      await waitUntil(async () => (await g.status()).opsPerSecond > 1000, 5000, 'the 8 GiB guest to write');
      const s = await g.status();
      assert.equal(s.memoryBytes, 8 * 2 ** 30);
      const rss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${g.pid}/status`, 'utf8'))![1]) * 1024;
      assert.ok(rss < 1 * 2 ** 30, `resident ${rss} bytes: memory is not allocated lazily`);
    } finally {
      await g.stop();
    }
  });
});
