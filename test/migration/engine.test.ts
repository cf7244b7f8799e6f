/**
 * The migration engine between two real guest processes over the real encrypted channel, the
 * test playing both agents: idle, kv and dirty guests, memory and disk, encrypted and plain; a
 * guest that outruns a capped link converging by throttle, and giving up at the timeout without;
 * the destination deciding not to commit; and a destination lost at switch-over leaving the source
 * paused and in doubt until its agent resolves it.
 */
import assert from 'node:assert/strict';
import { attachGuest, startGuest } from '../../src/guest/index.js';
import type { FerryError } from '../../src/errors.js';
import { sleep } from '../../src/common/async.js';
import { GuestSandbox, workloadReady } from '../support/guests.js';
import { alive } from '../support/processes.js';
import { waitUntil } from '../support/wait.js';
import { migrateLocally as migrate } from '../../src/bench/local-migration.js';
import { CuttableRelay } from '../support/relay.js';
import { dataPayloadPool } from '../../src/migration/payload-pool.js';

describe('migration between guest processes', function () {
  this.timeout(90_000);
  const box = new GuestSandbox();
  after(() => box.cleanup());

  it('moves an idle guest with its disk, encrypted: same digest on both sides', async () => {
    const config = box.config({ kind: 'idle' }, 64, 16);
    const src = await workloadReady(await startGuest(box.dir('src'), config));
    const m = await migrate(src, box.dir('dst'), config, { mode: 'encrypted' });
    assert.equal(m.source.phase, 'committed', JSON.stringify(m.source.result?.error));
    assert.equal(m.destination.phase, 'committed');
    const r = m.source.result!;
    assert.ok(r.downtimeMs !== null && r.downtimeMs >= 0);
    assert.ok(r.bytesSent > 64 << 20, `sent ${r.bytesSent}`);
    assert.equal((await src.status()).state, 'migrated');
    await assert.rejects(src.resume(), (e: FerryError) => e.code === 'ERR_FERRY_REFUSED');
    const dst = m.incoming.client;
    assert.equal((await dst.status()).state, 'running');
    assert.equal(await dst.digest(), await src.digest());
    // The destination opened the memory DATA straight into guest memory: no payload buffer held
    // any of it (the idle guest's disk is all zero blocks, which travel as markers).
    let result = (await dst.migration())?.result;
    await waitUntil(async () => (result = (await dst.migration())?.result) != null, 5000, 'the destination result');
    assert.ok(result!.openedInPlace! >= 64, `every 1 MiB message of 64 MiB memory opened in place: ${result!.openedInPlace}`);
    assert.deepEqual(result!.payloadBuffers, { allocated: 0, reused: 0 });
    await src.finish();
    await dst.stop();
  });

  it('sends the zero pages of a fresh guest as markers: a tiny fraction of its memory', async () => {
    const config = box.config({ kind: 'dirty', bytesPerSecond: 4096 }, 256);
    const src = await startGuest(box.dir('src'), config);
    const m = await migrate(src, box.dir('dst'), config, { mode: 'plain', verify: true });
    assert.equal(m.source.phase, 'committed', JSON.stringify(m.source.result?.error));
    const r = m.source.result!;
    assert.ok(r.bytesSent < (256 << 20) / 100, `sent ${r.bytesSent} bytes for 256 MiB`);
    assert.ok(r.zeroPagesSkipped > 60_000, `${r.zeroPagesSkipped} zero pages`);
    assert.equal(r.sourceDigest, r.destinationDigest);
    await src.finish();
    await m.incoming.client.stop();
  });

  for (const [name, workload, mode] of [
    ['kv', { kind: 'kv', getsPerSecond: 3000, setsPerSecond: 1000 }, 'plain'],
    ['dirty', { kind: 'dirty', bytesPerSecond: 8 << 20 }, 'encrypted'],
  ] as const) {
    it(`moves a running ${name} guest with a disk (${mode}), verified at switch-over, and it keeps running`, async () => {
      const config = box.config(workload, 128, 16);
      const src = await workloadReady(await startGuest(box.dir('src'), config));
      await sleep(500);
      const m = await migrate(src, box.dir('dst'), config, { mode, verify: true });
      assert.equal(m.source.phase, 'committed', JSON.stringify(m.source.result?.error));
      const r = m.source.result!;
      assert.ok(r.sourceDigest && r.sourceDigest === r.destinationDigest, 'digests differ');
      // The source stays paused as it was at switch-over, and every chunk hash agreed.
      assert.equal(r.verification?.chunksCompared, r.verification!.memoryChunks + r.verification!.diskChunks);
      const dst = m.incoming.client;
      await waitUntil(async () => (await dst.status()).opsPerSecond > 0, 5000, 'the workload to run at the destination');
      assert.ok(m.events.some((e) => e.type === 'pass'));
      // Plain: every DATA message through the destination's payload pool, never more buffers than
      // the channel's window holds. Encrypted: memory opened in place, the disk's blocks through the pool.
      let result = (await dst.migration())?.result;
      await waitUntil(async () => (result = (await dst.migration())?.result) != null, 5000, 'the destination result');
      const buffers = result!.payloadBuffers!;
      assert.ok(buffers.allocated + buffers.reused > 0, `DATA through the pool: ${JSON.stringify(buffers)}`);
      assert.ok(buffers.allocated <= 2 * dataPayloadPool().maxFree, `bounded by the window: ${JSON.stringify(buffers)}`);
      if (mode === 'plain') assert.equal(result!.openedInPlace, 0);
      else assert.ok(result!.openedInPlace! > 0, 'memory opened in place');
      await src.finish();
      await dst.stop();
    });
  }

  it('moves a guest its agent paused: it arrives paused, byte for byte, and resumes there', async () => {
    const config = box.config({ kind: 'kv', getsPerSecond: 3000, setsPerSecond: 1000 }, 64, 8);
    const src = await workloadReady(await startGuest(box.dir('src'), config));
    await sleep(300);
    await src.pause();
    const before = await src.digest();
    const m = await migrate(src, box.dir('dst'), config, { mode: 'encrypted' });
    assert.equal(m.source.phase, 'committed', JSON.stringify(m.source.result?.error));
    const dst = m.incoming.client;
    assert.equal((await dst.status()).state, 'paused');
    assert.equal(await dst.digest(), before);
    await dst.resume();
    await waitUntil(async () => (await dst.status()).opsPerSecond > 0, 5000, 'the workload to run at the destination');
    await src.finish();
    await dst.stop();
  });

  it('carries on when the control connection that started it dies; a new one follows it to the end', async () => {
    const config = box.config({ kind: 'dirty', bytesPerSecond: 16e6 }, 8);
    const dir = box.dir('src');
    const src = await startGuest(dir, config);
    await sleep(1000);
    // The "agent" that starts the migration goes away mid pre-copy (its socket closes, as when
    // the agent process is killed).
    const doomed = (await attachGuest(dir))!;
    let closed = false;
    await assert.rejects(
      migrate(doomed, box.dir('dst'), config, {
        mode: 'encrypted',
        maxBytesPerSecond: 8e6,
        maxDowntimeMs: 100,
        onEvent: (e) => {
          if (e.type === 'pass' && e.pass === 2 && !closed) {
            closed = true;
            doomed.close();
          }
        },
      }),
      (e: FerryError) => e.code === 'ERR_FERRY_NETWORK',
    );
    assert.ok(closed);
    const info = await src.awaitMigration();
    assert.equal(info.phase, 'committed', JSON.stringify(info.result?.error));
    assert.equal((await src.status()).state, 'migrated');
    await src.finish();
  });

  it('throttles a guest that dirties faster than a capped link drains, and converges', async () => {
    // 16 MB/s of page writes against an 8 MB/s link: pre-copy alone never gets under 100 ms.
    // The guest first runs a while so its memory is written (a fresh one is mostly zero pages).
    const config = box.config({ kind: 'dirty', bytesPerSecond: 16e6 }, 8);
    const src = await startGuest(box.dir('src'), config);
    await sleep(1500);
    const m = await migrate(src, box.dir('dst'), config, { mode: 'encrypted', maxBytesPerSecond: 8e6, maxDowntimeMs: 100, verify: true });
    assert.equal(m.source.phase, 'committed', JSON.stringify(m.source.result?.error));
    const r = m.source.result!;
    assert.ok(r.throttlePercent > 0, 'never throttled');
    assert.ok(m.events.some((e) => e.type === 'throttle'));
    assert.ok(r.passes.length > 2, `${r.passes.length} passes`);
    assert.ok(r.downtimeMs! < 1000, `downtime ${r.downtimeMs} ms`);
    assert.equal(r.sourceDigest, r.destinationDigest);
    await src.finish();
    await m.incoming.client.stop();
  });

  it('gives up at the timeout when throttling is off, and the guest runs on at the source', async () => {
    const config = box.config({ kind: 'dirty', bytesPerSecond: 16e6 }, 8);
    const src = await startGuest(box.dir('src'), config);
    await sleep(1500);
    const m = await migrate(src, box.dir('dst'), config, {
      mode: 'plain',
      maxBytesPerSecond: 8e6,
      maxDowntimeMs: 100,
      autoConverge: false,
      timeoutMs: 4000,
    });
    assert.equal(m.source.phase, 'aborted');
    assert.equal(m.source.result!.error!.code, 'ERR_FERRY_TIMEOUT');
    assert.equal(m.destination.phase, 'aborted');
    const s = await src.status();
    assert.equal(s.state, 'running');
    assert.equal(s.throttlePercent, 0);
    await waitUntil(async () => (await src.status()).opsPerSecond > 0, 3000, 'the source guest to run');
    await waitUntil(() => !alive(m.incoming.client.pid), 5000, 'the incoming guest to exit');
    await src.stop();
  });

  it('resumes the source when the destination decides not to commit', async () => {
    const config = box.config({ kind: 'kv', getsPerSecond: 2000, setsPerSecond: 500 }, 64);
    const src = await workloadReady(await startGuest(box.dir('src'), config));
    const m = await migrate(src, box.dir('dst'), config, { mode: 'encrypted', atReady: 'abort' });
    assert.equal(m.source.phase, 'aborted');
    assert.equal((await src.status()).state, 'running');
    await waitUntil(() => !alive(m.incoming.client.pid), 5000, 'the incoming guest to exit');
    await waitUntil(async () => (await src.status()).opsPerSecond > 0, 3000, 'the source guest to run');
    await src.stop();
  });

  it('stays paused and in doubt when the destination is lost at switch-over, until its agent resolves it', async () => {
    const config = box.config({ kind: 'kv', getsPerSecond: 2000, setsPerSecond: 500 }, 64);
    const src = await workloadReady(await startGuest(box.dir('src'), config));
    const m = await migrate(src, box.dir('dst'), config, {
      mode: 'encrypted',
      atReady: async (incoming) => {
        process.kill(incoming.client.pid, 'SIGKILL');
      },
    });
    assert.equal(m.source.phase, 'in-doubt');
    const s = await src.status();
    assert.equal(s.state, 'in-doubt');
    const d = await src.digest();
    await sleep(300);
    assert.equal(await src.digest(), d, 'a guest in doubt must not run');
    await assert.rejects(src.resume(), (e: FerryError) => e.code === 'ERR_FERRY_REFUSED');
    await assert.rejects(src.stop(), (e: FerryError) => e.code === 'ERR_FERRY_REFUSED');
    // The destination agent answers "not committed" (its guest died before commit): resume here.
    await src.resumeAfterAbort();
    await waitUntil(async () => (await src.status()).opsPerSecond > 0, 3000, 'the source guest to run');
    await src.stop();
  });
});

describe('migration with its data connections cut', function () {
  this.timeout(90_000);
  const box = new GuestSandbox();
  after(() => box.cleanup());

  it('cut mid pre-copy: afterwards exactly one side runs the guest, with its memory intact', async () => {
    // A relay between source and destination that can cut every connection it carries.
    const relay = new CuttableRelay({ host: '127.0.0.1', port: 0 });
    const relayAddress = await relay.listen();
    try {
      const config = box.config({ kind: 'dirty', bytesPerSecond: 16e6 }, 8);
      const src = await startGuest(box.dir('src'), config);
      await sleep(1000);
      const m = await migrate(src, box.dir('dst'), config, {
        mode: 'encrypted',
        maxBytesPerSecond: 8e6,
        maxDowntimeMs: 100,
        verify: true,
        route: (network) => {
          const [host, port] = network.split(':');
          relay.target = { host: host!, port: Number(port) };
          return relayAddress;
        },
        onEvent: (e) => {
          if (e.type === 'pass' && e.pass === 2 && relay.cuts === 0) relay.cut();
        },
      });
      assert.equal(relay.cuts, 1, 'the cut never happened');
      console.log(`      after the cut: ${m.source.phase}`);
      const s = await src.status();
      if (m.source.phase === 'committed') {
        // The channel reconnected and carried on.
        assert.equal(s.state, 'migrated');
        assert.equal((await m.incoming.client.status()).state, 'running');
        assert.equal(m.source.result!.sourceDigest, m.source.result!.destinationDigest);
        await src.finish();
        await m.incoming.client.stop();
      } else {
        assert.equal(m.source.phase, 'aborted', `phase ${m.source.phase}`);
        assert.equal(s.state, 'running');
        await waitUntil(() => !alive(m.incoming.client.pid), 5000, 'the incoming guest to exit');
        await src.stop();
      }
    } finally {
      relay.close();
    }
  });
});
