/**
 * `verify` without the pause (src/migration/verify.ts): the chunk ledgers on their own (what is
 * stale, what a dirty log holds back, where two sets of hashes first differ, CHUNK_DIGESTS refused
 * when malformed), then verified moves between two real guest processes — idle, kv and dirty, each
 * with a disk — whose chunk verdicts the whole-guest digests of both sides confirm, and a page
 * damaged at the destination (the test-only FERRY_TEST_CORRUPT_PAGE) caught, naming its chunk,
 * with the guest left running at the source.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomFillSync } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { connectChannel } from '../../src/channel/index.js';
import { startGuest, startIncomingGuest } from '../../src/guest/index.js';
import { FerryError } from '../../src/errors.js';
import { sleep } from '../../src/common/async.js';
import { migrateLocally as migrate } from '../../src/bench/local-migration.js';
import { CHUNK_BYTES, ChunkDigests, SourceChunkHashes, VERIFY_ALGORITHM, type SpaceSource } from '../../src/migration/verify.js';
import { ENGINE_VERSION, MSG, SPACE_DISK, SPACE_MEMORY } from '../../src/migration/messages.js';
import { CORRUPT_PAGE_ENV } from '../../src/guest/synthetic/test-faults.js';
import { GuestSandbox, workloadReady } from '../support/guests.js';
import { alive } from '../support/processes.js';
import { waitUntil } from '../support/wait.js';

const PAGE = 4096;
const BLOCK = 64 * 1024;

/** The tag key both sides of these ledgers share, as the source's VERIFY_KEY gives it. */
const KEY = randomBytes(32);

/** Chunk ledgers over plain buffers: `dirty` names the pages a dirty log would hold. */
function ledgers(memory: Uint8Array, disk: Uint8Array, dirty = new Set<number>(), key: Uint8Array = KEY): ChunkDigests {
  const mem: SpaceSource = {
    space: SPACE_MEMORY,
    unitCount: memory.length / PAGE,
    unitSize: PAGE,
    read: (f, n) => memory.subarray(f * PAGE, (f + n) * PAGE),
    dirty: (f, n) => [...dirty].some((p) => p >= f && p < f + n),
  };
  const dsk: SpaceSource = {
    space: SPACE_DISK,
    unitCount: disk.length / BLOCK,
    unitSize: BLOCK,
    read: (f, n) => disk.subarray(f * BLOCK, (f + n) * BLOCK),
  };
  return new ChunkDigests(mem, dsk, { memoryBytes: memory.length, diskBytes: disk.length }, key);
}

describe('verify: chunk ledgers', () => {
  it('hashes what was marked, holds back what the dirty log will send again, and finds the first differing chunk', async () => {
    const memory = new Uint8Array(1 << 20);
    const disk = new Uint8Array(4 * BLOCK);
    randomFillSync(memory.subarray(0, 512 * 1024));
    randomFillSync(disk.subarray(BLOCK, 2 * BLOCK));
    const dirty = new Set([3]);
    const src = ledgers(memory, disk, dirty);
    src.memory.markUnits(0, memory.length / PAGE);
    src.disk.markUnits(0, 4);
    src.schedule(true);
    await src.idle();
    // Page 3 is dirty: it stays stale for the pause (so its chunk does); every other page was hashed.
    assert.equal(src.memory.staleCount, 1);
    assert.equal(src.memory.chunksHashed + src.disk.chunksHashed, 16 + 4);
    assert.equal(src.memory.unitsHashed, 256 - 1);
    const root = await src.settle();
    assert.equal(src.memory.staleCount, 0);
    assert.equal(src.report(0, null).chunksHashedAtSwitchOver, 1);
    assert.equal(src.memory.unitsHashed, 256);

    // The destination holds the same but one byte of disk block 2 and one of memory chunk 9.
    const memory2 = Uint8Array.from(memory);
    const disk2 = Uint8Array.from(disk);
    memory2[9 * CHUNK_BYTES + 100] ^= 1;
    disk2[2 * BLOCK] = 7;
    const dst = ledgers(memory2, disk2);
    dst.memory.markUnits(0, memory.length / PAGE);
    dst.disk.markUnits(0, 4);
    const dstRoot = await dst.settle();
    assert.notEqual(dstRoot, root);
    const theirs = new SourceChunkHashes(dst);
    for (const m of src.messages()) theirs.accept(m);
    assert.deepEqual(theirs.compare(root), { space: 'memory', chunk: 9, offset: 9 * CHUNK_BYTES, bytes: CHUNK_BYTES });
    // With memory equal again the disk block is named; with everything equal, nothing.
    memory2[9 * CHUNK_BYTES + 100] ^= 1;
    dst.memory.markUnits(9 * 16, 1);
    await dst.settle();
    assert.deepEqual(theirs.compare(root), { space: 'disk', chunk: 2, offset: 2 * BLOCK, bytes: BLOCK });
    disk2[2 * BLOCK] = 0;
    dst.disk.markUnits(2, 1);
    assert.equal(await dst.settle(), root);
    assert.equal(theirs.compare(root), null);
    // A root that is not that of the hashes sent is refused, whatever the hashes say.
    assert.throws(
      () => theirs.compare('00'.repeat(32)),
      (e: FerryError) => e.code === 'ERR_FERRY_FRAME',
    );
  });

  it('refuses malformed, repeated, out-of-range and missing CHUNK_DIGESTS', () => {
    const d = ledgers(new Uint8Array(1 << 20), new Uint8Array(0));
    const frame = (e: FerryError) => e.code === 'ERR_FERRY_FRAME';
    const msg = (space: number, first: number, n: number, pad = 0) => {
      const b = Buffer.alloc(8 + n * 16 + pad);
      b.writeUInt8(space, 0);
      b.writeUInt32LE(first, 4);
      return b;
    };
    const theirs = new SourceChunkHashes(d);
    assert.throws(() => theirs.accept(msg(SPACE_MEMORY, 0, 1, 5)), frame);
    assert.throws(() => theirs.accept(msg(7, 0, 1)), frame);
    assert.throws(() => theirs.accept(msg(SPACE_MEMORY, 15, 2)), frame);
    assert.throws(() => theirs.accept(msg(SPACE_DISK, 0, 1)), frame);
    theirs.accept(msg(SPACE_MEMORY, 0, 8));
    assert.throws(() => theirs.accept(msg(SPACE_MEMORY, 7, 1)), frame);
    // Half the hashes: COMPLETE is refused before any comparison.
    assert.throws(() => theirs.compare(d.root()), /8 of 16 chunk hashes/);
  });

  it('tags under the key: the same bytes under another key give another root, and a zero page skipped by the scan tags as one hashed', async () => {
    const memory = new Uint8Array(1 << 20);
    randomFillSync(memory.subarray(0, 300 * 1024));
    const roots: string[] = [];
    for (const key of [KEY, KEY, randomBytes(32)]) {
      const d = ledgers(memory, new Uint8Array(0), new Set(), key);
      d.memory.markUnits(0, memory.length / PAGE);
      roots.push(await d.settle());
      d.stop();
    }
    assert.equal(roots[0], roots[1]);
    assert.notEqual(roots[0], roots[2]);
    // Pages marked one at a time are tagged without the zero scan; a whole chunk's with it: same root.
    const single = ledgers(memory, new Uint8Array(0));
    for (let p = 0; p < memory.length / PAGE; p++) {
      single.memory.markUnits(p, 1);
      if (p % 3 === 0) await single.settle();
    }
    assert.equal(await single.settle(), roots[0]);
    // A destroyed tagger is refused, not used.
    single.stop();
    single.memory.markUnits(0, 1);
    await assert.rejects(single.settle(), (e: FerryError) => e.code === 'ERR_FERRY_CRYPTO');
  });
});

describe('verify: moves between guest processes', function () {
  this.timeout(120_000);
  const box = new GuestSandbox();
  after(() => box.cleanup());

  for (const [name, workload, mode] of [
    ['idle', { kind: 'idle' }, 'encrypted'],
    ['kv', { kind: 'kv', getsPerSecond: 3000, setsPerSecond: 1000 }, 'encrypted'],
    ['dirty', { kind: 'dirty', bytesPerSecond: 8 << 20 }, 'plain'],
  ] as const) {
    it(`verifies a move of a running ${name} guest with a disk (${mode}): every chunk compared, the pause hashing only the last ones`, async () => {
      const config = box.config(workload, 96, 16, `v-${name}`);
      const src = await workloadReady(await startGuest(box.dir(`src-${name}`), config));
      await sleep(300);
      const m = await migrate(src, box.dir(`dst-${name}`), config, { mode, verify: true });
      assert.equal(m.source.phase, 'committed', JSON.stringify(m.source.result?.error));
      const r = m.source.result!;
      const v = r.verification!;
      assert.equal(v.algorithm, VERIFY_ALGORITHM);
      assert.equal(v.chunkBytes, CHUNK_BYTES);
      assert.equal(v.memoryChunks, (96 << 20) / CHUNK_BYTES);
      assert.equal(v.diskChunks, (16 << 20) / BLOCK);
      assert.equal(v.chunksCompared, v.memoryChunks + v.diskChunks);
      assert.equal(v.mismatch, null);
      assert.ok(v.chunksHashed >= v.chunksCompared, `hashed ${v.chunksHashed}`);
      // Most chunks were hashed before the pause; the pause re-hashed what the last pass touched.
      assert.ok(v.chunksHashedAtSwitchOver < v.chunksCompared / 2, `${v.chunksHashedAtSwitchOver} of ${v.chunksCompared} at switch-over`);
      assert.ok(r.sourceDigest !== null && r.sourceDigest === r.destinationDigest);
      let dr = (await m.incoming.client.migration())?.result;
      await waitUntil(async () => (dr = (await m.incoming.client.migration())?.result) != null, 5000, 'the destination result');
      assert.equal(dr!.verification!.chunksCompared, v.chunksCompared);
      // The ground truth: the whole-guest digests of the paused source and of the destination,
      // paused for the comparison, are equal.
      const dst = m.incoming.client;
      await dst.pause();
      assert.equal(await dst.digest(), await src.digest());
      await dst.resume();
      await src.finish();
      await dst.stop();
    });
  }

  it('catches a page damaged at the destination: the move fails naming its chunk, and the guest runs at the source only', async () => {
    const config = box.config({ kind: 'kv', getsPerSecond: 2000, setsPerSecond: 500 }, 64, 16, 'v-corrupt');
    const src = await workloadReady(await startGuest(box.dir('src-corrupt'), config));
    const page = 1000;
    // Read only by the incoming guest process this migration starts.
    process.env[CORRUPT_PAGE_ENV] = String(page);
    let m;
    try {
      m = await migrate(src, box.dir('dst-corrupt'), config, { mode: 'encrypted', verify: true });
    } finally {
      delete process.env[CORRUPT_PAGE_ENV];
    }
    assert.equal(m.source.phase, 'aborted');
    assert.equal(m.destination.phase, 'aborted');
    const chunk = Math.floor((page * PAGE) / CHUNK_BYTES);
    const err = m.source.result!.error!;
    assert.equal(err.code, 'ERR_FERRY_ABORTED');
    assert.match(err.message, new RegExp(`verify failed: memory chunk ${chunk} \\(bytes ${chunk * CHUNK_BYTES}-`));
    assert.deepEqual(m.destination.result!.verification!.mismatch, {
      space: 'memory',
      chunk,
      offset: chunk * CHUNK_BYTES,
      bytes: CHUNK_BYTES,
    });
    // The guest runs on here, and the destination never ran it.
    await waitUntil(() => !alive(m.incoming.client.pid), 10_000, 'the incoming guest process to exit');
    const status = await src.status();
    assert.equal(status.state, 'running');
    const ops = status.opsPerSecond;
    await waitUntil(async () => (await src.status()).opsPerSecond > 0, 5000, `the source workload to run (${ops})`);
    await src.stop();
  });

  for (const [name, type, payload] of [
    ['a VERIFY_KEY of 31 bytes', MSG.VERIFY_KEY, new Uint8Array(31)],
    ['DATA where the VERIFY_KEY belongs', MSG.DATA, new Uint8Array(32)],
  ] as const) {
    it(`refuses ${name} after a verified BEGIN, and the incoming guest process exits without running`, async () => {
      const config = box.config({ kind: 'idle' }, 16, 0, `v-key-${type}`);
      const migrationId = `m-${randomBytes(6).toString('hex')}`;
      const secret = { migrationId, key: randomBytes(32), nonce: randomBytes(8), mode: 'encrypted', streams: 1 } as const;
      const incoming = await startIncomingGuest(box.dir(`dst-key-${type}`), config, {
        ...secret,
        key: Buffer.from(secret.key),
        nonce: Buffer.from(secret.nonce),
      });
      const router = createServer({ pauseOnConnect: true }, (socket) => {
        try {
          incoming.addConnection(socket);
        } catch {
          // The incoming guest process is gone (it refused): addConnection closed the socket.
        }
      });
      await new Promise<void>((resolve) => router.listen(0, '127.0.0.1', resolve));
      try {
        const settled = incoming.client.awaitMigration();
        const ch = await connectChannel({ ...secret, networks: [`127.0.0.1:${(router.address() as AddressInfo).port}`] });
        const begin = {
          version: ENGINE_VERSION,
          migrationId,
          memoryBytes: 16 << 20,
          diskBytes: 0,
          pageSize: PAGE,
          blockSize: BLOCK,
          verify: true,
        };
        await ch.send(MSG.BEGIN, Buffer.from(JSON.stringify(begin)));
        const ok = await ch.receive();
        assert.equal(ok?.type, MSG.BEGIN_OK);
        await ch.send(type, payload);
        const info = await settled;
        assert.equal(info.phase, 'aborted');
        assert.equal(info.result!.error!.code, 'ERR_FERRY_FRAME');
        assert.match(
          info.result!.error!.message,
          type === MSG.VERIFY_KEY ? /VERIFY_KEY of 31 bytes/ : /expected VERIFY_KEY, got message 3/,
        );
        await waitUntil(() => !alive(incoming.client.pid), 10_000, 'the incoming guest process to exit');
        ch.abort(new FerryError('ERR_FERRY_ABORTED', 'test over'));
      } finally {
        router.close();
      }
    });
  }
});
