/**
 * QEMU guests migrated by the qemu driver between two guest processes on this host, over ferry's
 * channel (src/bench/local-migration.ts plays both agents): real QEMU running ferry's test guest,
 * which re-checks its memory without end, so a move that lost or bent a page shows as FAIL on the
 * destination's console. After every test no QEMU of the guest is left but the one that runs it.
 * Skipped, saying why, without qemu-system-x86_64.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { migrateLocally } from '../../../src/bench/local-migration.js';
import { FerryError } from '../../../src/errors.js';
import type { GuestClient } from '../../../src/guest/client.js';
import { startGuest } from '../../../src/guest/process.js';
import { PID_FILE } from '../../../src/guest/files.js';
import { CONSOLE_LOG, QEMU_PID_FILE } from '../../../src/guest/qemu/argv.js';
import { createQemu } from '../../../src/guest/qemu/create.js';
import { resolveQemu } from '../../../src/guest/qemu/probe.js';
import { parseTestGuestLog, type TestGuestLine } from '../../../src/guest/qemu/test-guest.js';
import type { MigrationEvent } from '../../../src/migration/types.js';
import type { QemuConfig } from '../../../src/guest/types.js';
import { sleep } from '../../../src/common/async.js';
import { alive, processesMentioning } from '../../support/processes.js';
import { waitUntil } from '../../support/wait.js';

const MiB = 1 << 20;

function consoleOf(dir: string): TestGuestLine[] {
  try {
    return parseTestGuestLog(readFileSync(path.join(dir, CONSOLE_LOG), 'utf8'));
  } catch {
    return [];
  }
}

/** Waits until the guest in `dir` has finished `sweeps` more full checks of its memory than now, all intact. */
async function checksPass(dir: string, sweeps = 1, ms = 60_000): Promise<void> {
  const done = () => consoleOf(dir).filter((l) => l.kind === 'check').length;
  const start = done();
  await waitUntil(() => done() >= start + sweeps, ms, `${sweeps} more memory checks in ${dir}`);
  const lines = consoleOf(dir);
  assert.deepEqual(
    lines.filter((l) => l.kind === 'fail' || (l.kind === 'check' && !l.ok) || l.kind === 'error'),
    [],
    `the guest in ${dir} found its memory damaged`,
  );
}

describe('qemu driver: live migration between two guest processes (real QEMU, test guest)', function () {
  this.timeout(180_000);
  let root: string;
  const clients: GuestClient[] = [];

  before(function () {
    const { missing } = resolveQemu();
    if (missing) {
      console.log(`      skipped: ${missing}`);
      this.skip();
    }
  });
  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'ferry-qemu-mig-'));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.destroy().catch(() => c.close());
    // Nothing of this test's guests may be left: no QEMU, no guest process.
    await waitUntil(() => processesMentioning(root).length === 0, 10_000, `no process left of ${root}`);
    rmSync(root, { recursive: true, force: true });
  });

  async function guest(
    memoryMiB = 96,
    append = 'fill=64 window=4 rate=max',
  ): Promise<{ client: GuestClient; config: QemuConfig; dir: string }> {
    const dir = path.join(root, 'src');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const config = await createQemu(
      {
        name: 'vm1',
        driver: 'qemu',
        memoryBytes: memoryMiB * MiB,
        cpus: 1,
        accel: 'tcg',
        append,
        nic: 'virtio',
        encryptedMigration: 'opportunistic',
      },
      dir,
    );
    const client = await startGuest(dir, config);
    clients.push(client);
    await waitUntil(() => consoleOf(dir).some((l) => l.kind === 'filled'), 60_000, 'the test guest to fill its memory');
    return { client, config, dir };
  }

  const pidIn = (dir: string) => Number(readFileSync(path.join(dir, QEMU_PID_FILE), 'utf8'));

  for (const [mode, streams] of [
    ['encrypted', 1],
    ['plain', 2],
    ['encrypted', 2],
  ] as const) {
    it(`${mode}, ${streams} stream${streams > 1 ? 's (QEMU multifd)' : ''}: the guest runs on at the destination only, its memory intact`, async function () {
      const { client, config, dir } = await guest();
      const dst = path.join(root, 'dst');
      const sourceQemu = pidIn(dir);
      const events: MigrationEvent[] = [];
      const m = await migrateLocally(client, dst, config, { mode, streams, onEvent: (e) => events.push(e) });
      clients.push(m.incoming.client);
      assert.equal(m.source.phase, 'committed', JSON.stringify(m.source.result?.error));
      assert.equal(m.destination.phase, 'committed');
      const r = m.source.result!;
      assert.ok(r.bytesSent > 60 * MiB, `the channel carried ${r.bytesSent} bytes for a guest with 64 MiB written`);
      assert.ok(r.downtimeMs !== null && r.downtimeMs < 5000, `downtime ${r.downtimeMs} ms`);
      assert.ok(
        events.some((e) => e.type === 'pass') && events.some((e) => e.type === 'switch-over'),
        JSON.stringify(events.map((e) => e.type)),
      );
      assert.ok(alive(sourceQemu), 'the source QEMU waits, paused, until its agent lets it go');
      await client.finish();
      await waitUntil(() => !alive(sourceQemu), 10_000, 'the source QEMU to quit');
      await checksPass(dst);
      const status = await m.incoming.client.status();
      assert.equal(status.state, 'running');
      assert.notEqual(status.hypervisorPid, sourceQemu);
    });
  }

  it('a guest that never wrote its memory crosses as almost nothing', async function () {
    const { client, config } = await guest(256, 'fill=0');
    const m = await migrateLocally(client, path.join(root, 'dst'), config, { mode: 'encrypted', streams: 1 });
    clients.push(m.incoming.client);
    assert.equal(m.source.phase, 'committed');
    const bytes = m.source.result!.bytesSent;
    assert.ok(bytes < 0.01 * 256 * MiB, `${bytes} bytes on the channel for 256 MiB never written: not under 1%`);
    await client.finish();
  });

  it('--verify: both RAM digests taken while both are paused, equal, and named', async function () {
    const { client, config } = await guest();
    const m = await migrateLocally(client, path.join(root, 'dst'), config, { mode: 'encrypted', streams: 1, verify: true });
    clients.push(m.incoming.client);
    assert.equal(m.source.phase, 'committed', JSON.stringify([m.source.result?.error, m.destination.result?.error]));
    const r = m.source.result!;
    assert.match(r.sourceDigest ?? '', /^[0-9a-f]{64}$/);
    assert.equal(r.destinationDigest, r.sourceDigest, "the source reports the destination's digest, which COMMITTED carries");
    // The destination's result is final once its QEMU runs the guest and the channel said goodbye.
    let arrival = await m.incoming.client.migration();
    await waitUntil(async () => (arrival = await m.incoming.client.migration())?.result != null, 10_000, "the destination's result");
    assert.equal(arrival!.result!.destinationDigest, r.sourceDigest);
    await client.finish();
  });

  it('not committed at ready-to-commit: the destination QEMU is gone first, then the source runs on', async function () {
    const { client, config, dir } = await guest();
    const dst = path.join(root, 'dst');
    const m = await migrateLocally(client, dst, config, { mode: 'encrypted', streams: 1, atReady: 'abort' });
    assert.equal(m.destination.phase, 'aborted');
    assert.equal(m.source.phase, 'aborted');
    assert.equal((await client.status()).state, 'running');
    await waitUntil(() => processesMentioning(dst).length === 0, 10_000, 'the destination QEMU and guest process to go');
    await checksPass(dir);
  });

  it('cancel mid-way: the guest runs on at the source, the destination keeps nothing running', async function () {
    const { client, config, dir } = await guest();
    const dst = path.join(root, 'dst');
    let cancelled = false;
    const m = await migrateLocally(client, dst, config, {
      mode: 'encrypted',
      streams: 1,
      maxBytesPerSecond: 8 * MiB, // slow enough to cancel in pre-copy
      onEvent: (e) => {
        if (e.type === 'pass' && e.bytesSent > 4 * MiB && !cancelled) {
          cancelled = true;
          void client.migration().then((info) => client.cancelMigration(info!.migrationId));
        }
      },
    });
    assert.ok(cancelled);
    assert.equal(m.source.phase, 'aborted');
    assert.match(m.source.result!.error!.message, /cancelled by the operator/);
    assert.equal((await client.status()).state, 'running');
    await waitUntil(() => processesMentioning(dst).length === 0, 10_000, 'nothing left at the destination');
    await checksPass(dir);
  });

  for (const [what, victim, signal] of [
    // The source runs on, and nothing is left at the destination.
    ['the destination QEMU killed (SIGKILL)', QEMU_PID_FILE, 'SIGKILL'],
    // Its QEMU, paused and never to be committed, must not outlive the process that carried its streams.
    ['the incoming guest process stopped (SIGTERM)', PID_FILE, 'SIGTERM'],
  ] as const) {
    it(`${what} mid-transfer: the source runs on, nothing left at the destination`, async function () {
      const { client, config, dir } = await guest();
      const dst = path.join(root, 'dst');
      let signalled = false;
      const m = await migrateLocally(client, dst, config, {
        mode: 'encrypted',
        streams: 1,
        maxBytesPerSecond: 8 * MiB,
        onEvent: (e) => {
          if (e.type === 'pass' && e.bytesSent > 4 * MiB && !signalled) {
            signalled = true;
            process.kill(Number(readFileSync(path.join(dst, victim), 'utf8')), signal);
          }
        },
      });
      assert.ok(signalled);
      assert.equal(m.source.phase, 'aborted');
      assert.equal((await client.status()).state, 'running');
      await waitUntil(() => processesMentioning(dst).length === 0, 10_000, 'nothing left at the destination');
      await checksPass(dir);
    });
  }

  it('a tampered stream is refused (ERR_FERRY_AUTH): the source runs on, nothing left at the destination', async function () {
    const { client, config, dir } = await guest();
    const dst = path.join(root, 'dst');
    let relay: Server | null = null;
    let flipped = false;
    const m = await migrateLocally(client, dst, config, {
      mode: 'encrypted',
      streams: 1,
      // A relay on the data path that flips one bit, once, well inside the stream.
      route: async (network) => {
        const [host, port] = [network.slice(0, network.lastIndexOf(':')), Number(network.slice(network.lastIndexOf(':') + 1))];
        let seen = 0;
        relay = createServer((inbound: Socket) => {
          const outbound = createConnection({ host, port });
          inbound.on('data', (d: Buffer) => {
            seen += d.length;
            if (!flipped && seen > 8 * MiB) {
              flipped = true;
              d[d.length >> 1]! ^= 0x10;
            }
            outbound.write(d);
          });
          outbound.pipe(inbound);
          for (const s of [inbound, outbound]) s.on('error', () => {});
          inbound.on('close', () => outbound.destroy());
          outbound.on('close', () => inbound.destroy());
        });
        await new Promise<void>((r) => relay!.listen(0, '127.0.0.1', r));
        return `127.0.0.1:${(relay!.address() as { port: number }).port}`;
      },
    });
    (relay as Server | null)?.close();
    assert.ok(flipped);
    assert.equal(m.source.phase, 'aborted');
    assert.ok(
      ['ERR_FERRY_AUTH', 'ERR_FERRY_ABORTED', 'ERR_FERRY_NETWORK'].includes(m.source.result!.error!.code),
      JSON.stringify(m.source.result!.error),
    );
    assert.equal(m.destination.result?.error?.code ?? 'ERR_FERRY_AUTH', 'ERR_FERRY_AUTH');
    assert.equal((await client.status()).state, 'running');
    await waitUntil(() => processesMentioning(dst).length === 0, 10_000, 'nothing left at the destination');
    await checksPass(dir);
  });

  it('refuses a config whose command line this ferry would not build, before any QEMU starts', async function () {
    const dir = path.join(root, 'src');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const config = await createQemu(
      {
        name: 'vm1',
        driver: 'qemu',
        memoryBytes: 64 * MiB,
        cpus: 1,
        accel: 'tcg',
        append: 'fill=0',
        nic: 'virtio',
        encryptedMigration: 'opportunistic',
      },
      dir,
    );
    const bent = { ...config, argv: [...config.argv.slice(0, -1), '-S'] };
    await assert.rejects(startGuest(dir, bent), (e: FerryError) => /command line/.test(e.message));
    await sleep(200);
    assert.equal(processesMentioning(root).length, 0);
  });
});
