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
import { CHUNK_BYTES, ChunkDigests, NO_ZEROS, SourceChunkHashes, VERIFY_ALGORITHM, type SpaceSource } from '../../src/migration/verify.js';
import { zeroPages } from '../../src/crypto/index.js';
import { ENGINE_VERSION, MSG, SPACE_DISK, SPACE_MEMORY } from '../../src/migration/messages.js';
import { CORRUPT_PAGE_ENV } from '../../src/guest/synthetic/test-faults.js';
import { GuestSandbox, workloadReady } from '../support/guests.js';
import { alive } from '../support/processes.js';
import { waitUntil } from '../support/wait.js';

const PAGE = 4096;
const BLOCK = 64 * 1024;

/** The tag key both sides of these ledgers share, as the source's VERIFY_KEY gives it. */
const KEY = randomBytes(32);

/** Chunk ledgers over plain buffers. */
function ledgers(memory: Uint8Array, disk: Uint8Array, key: Uint8Array = KEY): ChunkDigests {
  const mem: SpaceSource = {
    space: SPACE_MEMORY,
    unitCount: memory.length / PAGE,
    unitSize: PAGE,
    read: (f, n) => memory.subarray(f * PAGE, (f + n) * PAGE),
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
  it('tags what is handed over, counts for the pause what came after the mark, and finds the first differing chunk', () => {
    const memory = new Uint8Array(1 << 20);
    const disk = new Uint8Array(4 * BLOCK);
    randomFillSync(memory.subarray(0, 512 * 1024));
    randomFillSync(disk.subarray(BLOCK, 2 * BLOCK));
    // The source hands its bytes over, as sent; then, paused, page 3 again.
    const src = ledgers(memory, disk);
    src.update(SPACE_MEMORY, 0, memory.length / PAGE, memory, 'scan');
    src.update(SPACE_DISK, 0, 4, disk, 'scan');
    // Chunk tags wait for a mark (or the settle): 16 memory chunks and 4 disk ones then.
    assert.equal(src.report(0, null).chunksHashed, 0);
    src.mark();
    assert.equal(src.report(0, null).chunksHashed, 16 + 4);
    memory[3 * PAGE] ^= 0xff;
    src.update(SPACE_MEMORY, 3, 1, memory.subarray(3 * PAGE, 4 * PAGE), NO_ZEROS);
    const root = src.settle();
    assert.equal(src.report(0, null).chunksHashedAtSwitchOver, 1);
    assert.equal(src.report(0, null).unitsHashed, 256 + 4 + 1);

    // The destination holds the same but one byte of disk block 2 and one of memory chunk 9.
    const memory2 = Uint8Array.from(memory);
    const disk2 = Uint8Array.from(disk);
    memory2[9 * CHUNK_BYTES + 100] ^= 1;
    disk2[2 * BLOCK] = 7;
    const dst = ledgers(memory2, disk2);
    dst.update(SPACE_MEMORY, 0, memory.length / PAGE, null, NO_ZEROS);
    dst.update(SPACE_DISK, 0, 4, null, 'scan');
    assert.notEqual(dst.settle(), root);
    const theirs = new SourceChunkHashes(dst);
    for (const m of src.messages()) theirs.accept(m);
    assert.deepEqual(theirs.compare(root), { space: 'memory', chunk: 9, offset: 9 * CHUNK_BYTES, bytes: CHUNK_BYTES });
    // With memory equal again the disk block is named; with everything equal, nothing.
    memory2[9 * CHUNK_BYTES + 100] ^= 1;
    dst.update(SPACE_MEMORY, 9 * 16, 1, null, NO_ZEROS);
    dst.settle();
    assert.deepEqual(theirs.compare(root), { space: 'disk', chunk: 2, offset: 2 * BLOCK, bytes: BLOCK });
    // A block said to be zero by a scan that finds it is not: tagged from its bytes, still caught.
    dst.update(SPACE_DISK, 2, 1, null, 'scan');
    assert.deepEqual(theirs.compare(root), { space: 'disk', chunk: 2, offset: 2 * BLOCK, bytes: BLOCK });
    disk2[2 * BLOCK] = 0;
    dst.update(SPACE_DISK, 2, 1, null, 'scan');
    assert.equal(dst.settle(), root);
    assert.equal(theirs.compare(root), null);
    // The source sends only what changed since: one page more at the source is one chunk's tag,
    // which replaces the destination's copy of the old one.
    memory[200 * PAGE + 1] ^= 0x55;
    src.update(SPACE_MEMORY, 200, 1, memory.subarray(200 * PAGE, 201 * PAGE), NO_ZEROS);
    const root2 = src.settle();
    const changed = [...src.messages()];
    assert.equal(changed.length, 1);
    assert.equal(changed[0]!.length, 8 + 16);
    assert.equal(Buffer.from(changed[0]!).readUInt32LE(4), 12);
    theirs.accept(changed[0]!);
    assert.deepEqual(theirs.compare(root2), { space: 'memory', chunk: 12, offset: 12 * CHUNK_BYTES, bytes: CHUNK_BYTES });
    memory2[200 * PAGE + 1] ^= 0x55;
    dst.update(SPACE_MEMORY, 200, 1, null, NO_ZEROS);
    assert.equal(dst.settle(), root2);
    assert.equal(theirs.compare(root2), null);
    assert.deepEqual([...src.messages()], []);
    // A root that is not that of the hashes sent is refused, whatever the hashes say.
    assert.throws(
      () => theirs.compare('00'.repeat(32)),
      (e: FerryError) => e.code === 'ERR_FERRY_FRAME',
    );
    // The same with this side's root at hand (its tags equal the source's, so it stands for theirs).
    assert.equal(theirs.compare(root2, dst.settle()), null);
    assert.throws(
      () => theirs.compare('00'.repeat(32), dst.settle()),
      (e: FerryError) => e.code === 'ERR_FERRY_FRAME',
    );
  });

  it('refuses malformed, out-of-range and missing CHUNK_DIGESTS; a chunk sent again is replaced', () => {
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
    theirs.accept(msg(SPACE_MEMORY, 7, 1));
    // Half the hashes (chunk 7 twice counts once): COMPLETE is refused before any comparison.
    assert.throws(() => theirs.compare(d.root()), /8 of 16 chunk hashes/);
  });

  it('tags under the key, whatever the caller knew of the zeros: another key gives another root; nothing is tagged once stopped', () => {
    const memory = new Uint8Array(1 << 20);
    randomFillSync(memory.subarray(0, 300 * 1024));
    randomFillSync(memory.subarray(600 * 1024, 610 * 1024));
    const pages = memory.length / PAGE;
    const rootOf = (key: Uint8Array, hand: (d: ChunkDigests) => void): string => {
      const d = ledgers(memory, new Uint8Array(0), key);
      hand(d);
      const root = d.settle();
      d.stop();
      return root;
    };
    const scanned = rootOf(KEY, (d) => d.update(SPACE_MEMORY, 0, pages, memory, 'scan'));
    // The zero scan's own list of the zero pages, as the source's sender passes it; none at all; a
    // page at a time; read from the space: one root.
    assert.equal(
      rootOf(KEY, (d) => d.update(SPACE_MEMORY, 0, pages, memory, zeroPages(memory, PAGE))),
      scanned,
    );
    assert.equal(
      rootOf(KEY, (d) => d.update(SPACE_MEMORY, 0, pages, null, NO_ZEROS)),
      scanned,
    );
    assert.equal(
      rootOf(KEY, (d) => {
        for (let p = 0; p < pages; p++) d.update(SPACE_MEMORY, p, 1, null, 'scan');
      }),
      scanned,
    );
    // Runs that start and end inside chunks.
    assert.equal(
      rootOf(KEY, (d) => {
        for (let p = 0; p < pages; p += 7)
          d.update(SPACE_MEMORY, p, Math.min(7, pages - p), memory.subarray(p * PAGE, (p + 7) * PAGE), 'scan');
      }),
      scanned,
    );
    // Pages in any order, some twice: the chunk tags, computed together at the flush, agree.
    assert.equal(
      rootOf(KEY, (d) => {
        for (let p = pages - 1; p >= 0; p--) d.update(SPACE_MEMORY, p, 1, null, NO_ZEROS);
        for (let p = 0; p < pages; p += 3) d.update(SPACE_MEMORY, p, Math.min(3, pages - p), null, NO_ZEROS);
      }),
      scanned,
    );
    assert.notEqual(
      rootOf(randomBytes(32), (d) => d.update(SPACE_MEMORY, 0, pages, memory, 'scan')),
      scanned,
    );
    const d = ledgers(memory, new Uint8Array(0));
    d.update(SPACE_MEMORY, 0, pages, memory, 'scan');
    d.mark();
    d.stop();
    d.update(SPACE_MEMORY, 0, 1, new Uint8Array(PAGE).fill(1), NO_ZEROS);
    assert.equal(d.settle(), scanned);
  });
});

describe('verify: moves between guest processes', function () {
  this.timeout(120_000);
  const box = new GuestSandbox();
  after(() => box.cleanup());

  it('verifies a move of a dirty guest that wrote all of its memory and disk first (dirty:RATE,fill): no zero page or block left', async () => {
    const config = box.config({ kind: 'dirty', bytesPerSecond: 1 << 20, fill: true }, 32, 8, 'v-fill');
    const src = await workloadReady(await startGuest(box.dir('src-fill'), config));
    const m = await migrate(src, box.dir('dst-fill'), config, { mode: 'encrypted', verify: true });
    assert.equal(m.source.phase, 'committed', JSON.stringify(m.source.result?.error));
    const first = m.source.result!.passes[0]!;
    assert.equal(first.pages, (32 << 20) / 4096);
    assert.equal(first.zeroPages, 0);
    assert.equal(first.blocks, (8 << 20) / (64 << 10)); // 64 KiB blocks
    assert.equal(first.zeroBlocks, 0);
    await src.finish();
    await m.incoming.client.destroy();
  });

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
