/**
 * The dirty log under a real concurrent writer: the workload worker dirties memory and disk while
 * this thread harvests and copies what it names, pass after pass, as the migration source does.
 * After a final pass with the worker paused, the copy must equal the guest byte for byte.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirtyLog } from '../../src/guest/synthetic/dirty-log.js';
import { DiskImage } from '../../src/guest/synthetic/disk.js';
import { BLOCK_SIZE, PAGE_SIZE } from '../../src/guest/synthetic/layout.js';
import { GuestMemory } from '../../src/guest/synthetic/memory.js';
import { Vcpu } from '../../src/guest/synthetic/vcpu.js';
import { sleep } from '../../src/common/async.js';
import { waitUntil } from '../support/wait.js';

describe('dirty log', () => {
  it('harvests each set bit once, ascending, sign bit included', () => {
    const log = new DirtyLog(100);
    for (const i of [99, 31, 0, 63, 32, 31]) log.mark(i);
    assert.equal(log.count(), 5);
    assert.deepEqual([...log.harvest()], [0, 31, 32, 63, 99]);
    assert.equal(log.count(), 0);
    assert.deepEqual([...log.harvest()], []);
    log.markRange(10, 40);
    assert.equal(log.harvest().length, 40);
  });

  describe('with the workload worker writing memory and disk', function () {
    this.timeout(30_000);
    const root = mkdtempSync(join(tmpdir(), 'ferry-dirty-'));
    after(() => rmSync(root, { recursive: true, force: true }));

    it('copies converge to the guest exactly once the writer is paused', async () => {
      const memory = new GuestMemory(32 << 20);
      const pageLog = new DirtyLog(memory.pageCount);
      const disk = DiskImage.open(join(root, 'disk.img'), 4 << 20);
      const blockLog = new DirtyLog(disk.blockCount);
      const vcpu = new Vcpu(
        {
          memoryBytes: memory.bytes,
          slots: memory.buffers,
          pageLog: pageLog.buffer,
          diskPath: disk.path,
          diskBytes: disk.bytes,
          blockLog: blockLog.buffer,
        },
        { kind: 'dirty', bytesPerSecond: 64 << 20 },
        12345,
      );
      const shadow = new Uint8Array(memory.bytes);
      const shadowDisk = Buffer.alloc(disk.bytes);
      const copyPages = (pages: Uint32Array): void => {
        for (const p of pages) shadow.set(memory.pages(p, 1), p * PAGE_SIZE);
      };
      const copyBlocks = (blocks: Uint32Array): void => {
        for (const b of blocks) disk.readBlocks(b, 1, shadowDisk.subarray(b * BLOCK_SIZE));
      };
      try {
        vcpu.start(null);
        // Worker start-up is slow on a busy machine: begin once it writes.
        await waitUntil(() => pageLog.count() > 0, 10_000, 'the writer to start');
        // Pass 1: clear, then copy everything; later passes copy what the log names.
        pageLog.clear();
        blockLog.clear();
        shadow.set(memory.slots[0]!);
        disk.readBlocks(0, disk.blockCount, shadowDisk);
        let harvested = 0;
        for (let pass = 0; pass < 8 || (harvested < 100 && pass < 200); pass++) {
          await sleep(40);
          const pages = pageLog.harvest();
          const blocks = blockLog.harvest();
          harvested += pages.length + blocks.length;
          copyPages(pages);
          copyBlocks(blocks);
        }
        assert.ok(harvested > 100, `the writer dirtied only ${harvested} units`);
        await sleep(40);
        await vcpu.pause();
        const last = pageLog.harvest();
        // Before the final pass the copy lags the guest wherever the writer wrote since the last
        // harvest: the check below can fail.
        if (last.length > 0) assert.notDeepEqual(Buffer.from(shadow), Buffer.from(memory.slots[0]!));
        copyPages(last);
        copyBlocks(blockLog.harvest());
        assert.ok(Buffer.from(shadow).equals(Buffer.from(memory.slots[0]!)), 'memory copy differs after the final pass');
        const now = Buffer.alloc(disk.bytes);
        disk.readBlocks(0, disk.blockCount, now);
        assert.ok(now.equals(shadowDisk), 'disk copy differs after the final pass');
        assert.ok(!now.equals(Buffer.alloc(disk.bytes)), 'the writer never wrote the disk');
        // Paused means paused: nothing more is dirtied.
        await sleep(100);
        assert.equal(pageLog.count() + blockLog.count(), 0);
      } finally {
        await vcpu.stop();
        disk.close();
      }
    });
  });
});
