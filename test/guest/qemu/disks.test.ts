/**
 * QEMU guests with local disks moved between two guest processes on this host (src/bench/
 * local-migration.ts plays both agents): real QEMU running ferry's test guest with a 64 MiB qcow2
 * disk written with a pattern before it starts, and written again through QEMU while it moves;
 * the disk mirrored over NBD through the encrypted channel. The images are compared by qemu-img
 * itself, apart from ferry's own digests. Skipped, saying why, without qemu-system-x86_64 or
 * qemu-img.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { migrateLocally } from '../../../src/bench/local-migration.js';
import type { GuestClient } from '../../../src/guest/client.js';
import { startGuest } from '../../../src/guest/process.js';
import { createQemu } from '../../../src/guest/qemu/create.js';
import { diskPath } from '../../../src/guest/qemu/disks.js';
import { resolveQemu } from '../../../src/guest/qemu/probe.js';
import { QEMU_PID_FILE } from '../../../src/guest/qemu/argv.js';
import type { MigrationEvent } from '../../../src/migration/types.js';
import type { QemuConfig } from '../../../src/guest/types.js';
import { processesMentioning } from '../../support/processes.js';
import { waitUntil } from '../../support/wait.js';
import { readFileSync } from 'node:fs';

const MiB = 1 << 20;

function hasQemuImg(): boolean {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** qemu-img's own word on whether two images hold the same content (-U: a QEMU may still hold them). */
function sameContent(a: string, b: string): boolean {
  try {
    execFileSync('qemu-img', ['compare', '-U', a, b], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** Writes `pattern` over [offset, offset+bytes) of the image, through qemu-io (QEMU's own block layer). */
function writePattern(image: string, offset: number, bytes: number, pattern: number): void {
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} ${offset} ${bytes}`, image], { stdio: 'pipe' });
}

/** Does [offset, offset+bytes) of the image read back as `pattern`? (qemu-io read -P checks it.) */
function holdsPattern(image: string, offset: number, bytes: number, pattern: number): boolean {
  const out = execFileSync('qemu-io', ['-U', '-r', '-f', 'qcow2', '-c', `read -P ${pattern} ${offset} ${bytes}`, image], {
    encoding: 'utf8',
  });
  return !/Pattern verification failed/.test(out);
}

describe('qemu driver: guests with local disks, mirrored through the channel (real QEMU, test guest)', function () {
  this.timeout(240_000);
  let root: string;
  const clients: GuestClient[] = [];

  before(function () {
    const { missing } = resolveQemu();
    if (missing || !hasQemuImg()) {
      console.log(`      skipped: ${missing ?? 'no qemu-img (Debian: apt-get install qemu-utils)'}`);
      this.skip();
    }
  });
  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'ferry-qemu-disk-'));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.destroy().catch(() => c.close());
    await waitUntil(() => processesMentioning(root).length === 0, 10_000, `no process left of ${root}`);
    rmSync(root, { recursive: true, force: true });
  });

  /** A guest with one new 64 MiB qcow2 disk (or the image `shared`, on shared storage), 8 MiB of it written with 0xa5 before QEMU starts. */
  async function guest(shared?: string): Promise<{ client: GuestClient; config: QemuConfig; dir: string }> {
    const dir = path.join(root, 'src');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const config = await createQemu(
      {
        name: 'vm1',
        driver: 'qemu',
        memoryBytes: 64 * MiB,
        cpus: 1,
        accel: 'tcg',
        append: 'fill=16 window=4 rate=1024',
        nic: 'virtio',
        encryptedMigration: 'opportunistic',
        disks: [shared ? { file: shared, shared: true } : { bytes: 64 * MiB, shared: false }],
      },
      dir,
    );
    assert.deepEqual(config.disks, [{ format: 'qcow2', bytes: 64 * MiB, ...(shared ? { shared } : {}) }]);
    writePattern(diskPath(dir, 0), 0, 8 * MiB, 0xa5);
    const client = await startGuest(dir, config);
    clients.push(client);
    return { client, config, dir };
  }

  it('encrypted: the disk mirrored before memory, disk bytes apart from memory, digests equal, the images the same', async function () {
    const { client, config } = await guest();
    const dst = path.join(root, 'dst');
    const events: MigrationEvent[] = [];
    const m = await migrateLocally(client, dst, config, { mode: 'encrypted', streams: 1, verify: true, onEvent: (e) => events.push(e) });
    clients.push(m.incoming.client);
    assert.equal(m.source.phase, 'committed', JSON.stringify(m.source.result?.error));
    const r = m.source.result!;
    const disks = r.disks!;
    assert.ok(disks, 'the result has disk figures');
    assert.equal(disks.mirroredBytes, 64 * MiB);
    assert.ok(disks.bytes >= 8 * MiB, `${disks.bytes} disk bytes mirrored for 8 MiB written`);
    assert.ok(r.hypervisor!.ramBytes > 0, 'memory counted apart');
    const firstPass = events.findIndex((e) => e.type === 'pass');
    const lastDisks = events.map((e) => e.type).lastIndexOf('disks');
    assert.ok(
      lastDisks >= 0 && lastDisks < firstPass,
      'every disk event before the first memory pass: RAM starts once the mirror is ready',
    );
    const ready = events[lastDisks] as Extract<MigrationEvent, { type: 'disks' }>;
    assert.equal(ready.ready, 1);
    assert.match(disks.digests!.source![0]!, /^[0-9a-f]{64}$/);
    let arrival = await m.incoming.client.migration();
    await waitUntil(async () => (arrival = await m.incoming.client.migration())?.result != null, 10_000, "the destination's result");
    assert.deepEqual(arrival!.result!.disks!.digests!.destination, disks.digests!.source);
    // After the commit the source's image is kept beside its directory, and the result says where.
    const kept = disks.sourceImages!;
    assert.equal(kept.length, 1);
    assert.equal(kept[0]!.action, 'kept');
    assert.ok(existsSync(kept[0]!.path));
    assert.ok(sameContent(kept[0]!.path, diskPath(dst, 0)), 'qemu-img compare: the destination image equals the source image');
    assert.ok(holdsPattern(diskPath(dst, 0), 0, 8 * MiB, 0xa5), 'the pattern written before the start');
    assert.ok(holdsPattern(diskPath(dst, 0), 8 * MiB, 56 * MiB, 0), 'the rest, never written, reads as zeros');
    await client.finish();
    assert.equal((await m.incoming.client.status()).state, 'running');
  });

  it('the destination QEMU killed mid-mirror: the guest runs on at the source with its disk, nothing left at the destination', async function () {
    const { client, config, dir } = await guest();
    const dst = path.join(root, 'dst');
    let killed = false;
    const m = await migrateLocally(client, dst, config, {
      mode: 'encrypted',
      streams: 1,
      onEvent: (e) => {
        if (e.type === 'disks' && !killed) {
          killed = true;
          process.kill(Number(readFileSync(path.join(dst, QEMU_PID_FILE), 'utf8')), 'SIGKILL');
        }
      },
    });
    assert.ok(killed);
    assert.equal(m.source.phase, 'aborted');
    assert.equal((await client.status()).state, 'running');
    await waitUntil(() => processesMentioning(dst).length === 0, 10_000, 'nothing left at the destination');
    assert.ok(
      !existsSync(path.join(dst, 'disks')) || readdirSync(path.join(dst, 'disks')).length === 0,
      'no image left at the destination',
    );
    assert.ok(holdsPattern(diskPath(dir, 0), 0, 8 * MiB, 0xa5), 'the source disk intact');
    // The source's QEMU has its disk to itself again: a leftover mirror job or NBD node would make
    // the next move fail; it commits.
    const again = await migrateLocally(client, path.join(root, 'dst2'), config, { mode: 'encrypted', streams: 1 });
    clients.push(again.incoming.client);
    assert.equal(again.source.phase, 'committed', JSON.stringify(again.source.result?.error));
    assert.ok(holdsPattern(diskPath(path.join(root, 'dst2'), 0), 0, 8 * MiB, 0xa5), 'the disk arrived intact');
    await client.finish();
  });

  it('--remove-source-disks: after the commit the source image is deleted, and the result says so', async function () {
    const { client, config, dir } = await guest();
    const dst = path.join(root, 'dst');
    const m = await migrateLocally(client, dst, config, { mode: 'encrypted', streams: 1, removeSourceDisks: true });
    clients.push(m.incoming.client);
    assert.equal(m.source.phase, 'committed', JSON.stringify(m.source.result?.error));
    assert.deepEqual(m.source.result!.disks!.sourceImages, [{ index: 0, action: 'removed', path: diskPath(dir, 0) }]);
    assert.ok(!existsSync(diskPath(dir, 0)), 'the source image is gone');
    assert.ok(holdsPattern(diskPath(dst, 0), 0, 8 * MiB, 0xa5), 'the destination has the disk');
    await client.finish();
  });

  it('a disk on shared storage: nothing of it copied, both ends use the one image, which the source leaves to the destination', async function () {
    const image = path.join(root, 'shared.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(64 * MiB)]);
    const { client, config } = await guest(image);
    const dst = path.join(root, 'dst');
    const m = await migrateLocally(client, dst, config, { mode: 'encrypted', streams: 1, removeSourceDisks: true, verify: true });
    clients.push(m.incoming.client);
    assert.equal(m.source.phase, 'committed', JSON.stringify(m.source.result?.error));
    const disks = m.source.result!.disks!;
    assert.equal(disks.bytes, 0, 'nothing mirrored');
    assert.equal(disks.sharedBytes, 64 * MiB);
    // The 16 MiB of memory the guest wrote and its boot files, not the disk's 8 MiB besides.
    assert.ok(m.source.result!.bytesSent < 24 * MiB, `${m.source.result!.bytesSent} bytes on the channel: more than memory`);
    assert.match(disks.digests!.unavailable!, /every disk is on shared storage/, '--verify says why it compares no disk');
    assert.deepEqual(
      disks.sourceImages,
      [{ index: 0, action: 'shared', path: image }],
      '--remove-source-disks leaves a shared image alone',
    );
    assert.equal(readlinkSync(diskPath(dst, 0)), image);
    await client.finish();
    assert.equal((await m.incoming.client.status()).state, 'running');
    assert.ok(holdsPattern(image, 0, 8 * MiB, 0xa5), 'the shared image as it was');
  });
});
