/**
 * The guest driver contract (src/guest/driver.ts), the same for every driver in DRIVERS: real guest
 * processes made by the driver's create, started, paused, re-attached, migrated on this host both
 * ways a hand-off can end and in doubt, signalled, and stopped and destroyed, as an agent does it.
 * A driver this host cannot run is skipped with the reason its availability() gives.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { migrateLocally } from '../../src/bench/local-migration.js';
import { sleep } from '../../src/common/async.js';
import { nativeUnavailableReason } from '../../src/crypto/index.js';
import { FerryError } from '../../src/errors.js';
import {
  attachGuest,
  DRIVERS,
  startGuest,
  type GuestClient,
  type GuestConfig,
  type GuestCreateRequest,
  type GuestDriverName,
} from '../../src/guest/index.js';
import { PROTOCOL_VERSION } from '../../src/guest/protocol.js';
import { GuestSandbox, workloadReady } from '../support/guests.js';
import { alive, processesMentioning } from '../support/processes.js';
import { waitUntil } from '../support/wait.js';

interface DriverUnderTest {
  /** A small guest of this driver named `name`, as `ferry vm create` asks for it; the driver's create makes its config. */
  testConfig(name: string): GuestCreateRequest;
  /** Gives a digest of a paused guest; a driver that cannot refuses digest with a coded error. */
  digests: boolean;
}

/** Every driver must be here: a driver added to GuestDriverName without its entry fails to type-check. */
const UNDER_TEST: Record<GuestDriverName, DriverUnderTest> = {
  synthetic: {
    testConfig: (name) => ({
      name,
      driver: 'synthetic',
      memoryBytes: 16 << 20,
      diskBytes: 1 << 20,
      workload: { kind: 'dirty', bytesPerSecond: 1 << 20 },
      nic: 'virtio',
      encryptedMigration: 'opportunistic',
    }),
    digests: true,
  },
  qemu: {
    // ferry's test guest (no kernel given) under TCG: it boots at once and needs no KVM.
    testConfig: (name) => ({
      name,
      driver: 'qemu',
      memoryBytes: 32 << 20,
      cpus: 1,
      accel: 'tcg',
      append: 'fill=16 window=2 rate=1024',
      nic: 'virtio',
      encryptedMigration: 'opportunistic',
    }),
    digests: true,
  },
};

const refused = (e: unknown): boolean => e instanceof FerryError && e.code === 'ERR_FERRY_REFUSED';

/** Runs a guest process entry by hand, as only a stray start would: its exit status and stderr. */
function runEntry(entry: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [entry, ...args], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stderr }));
  });
}

for (const driver of Object.values(DRIVERS)) {
  const { testConfig, digests } = UNDER_TEST[driver.name];

  describe(`guest driver conformance: ${driver.name}`, function () {
    this.timeout(60_000);
    const box = new GuestSandbox();

    before(async function () {
      const availability = await driver.availability();
      if (!availability.available) {
        console.log(`      skipped: ${availability.detail}`);
        this.skip();
      }
    });
    after(() => {
      // A guest that outlives its process (a QEMU) is in no guest.pid file, which the sandbox kills by.
      for (const pid of processesMentioning(box.root)) process.kill(pid, 'SIGKILL');
      box.cleanup();
    });

    /** A guest directory with the driver's config made in it, as an agent's create does. */
    async function created(name = 'g'): Promise<{ dir: string; config: GuestConfig }> {
      const dir = box.dir(name);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      return { dir, config: await driver.create(testConfig('conformance'), dir) };
    }

    /** A running guest, once its workload has set up (what a migration moves). */
    async function started(name = 'g'): Promise<{ g: GuestClient; dir: string; config: GuestConfig }> {
      const { dir, config } = await created(name);
      return { g: await workloadReady(await startGuest(dir, config)), dir, config };
    }

    /** Runs `body` with a new guest, stopped afterwards if its process still runs. */
    async function withGuest(body: (g: GuestClient, dir: string, config: GuestConfig) => Promise<void>): Promise<void> {
      const { g, dir, config } = await started();
      try {
        await body(g, dir, config);
      } finally {
        g.close();
        const left = await attachGuest(dir);
        if (left) await left.stop();
      }
    }

    it('starts a guest process that says who it is, keeps its pid file and runs the guest', () =>
      withGuest(async (g, dir, config) => {
        assert.ok(alive(g.pid));
        const hello = await g.request('hello', {});
        assert.deepEqual(hello, { protocol: PROTOCOL_VERSION, pid: g.pid, name: config.name, incoming: false });
        assert.equal(Number(readFileSync(join(dir, 'guest.pid'), 'utf8')), g.pid);
        const s = await g.status();
        assert.equal(s.name, config.name);
        assert.equal(s.state, 'running');
        assert.equal(s.pid, g.pid);
        assert.equal(s.memoryBytes, config.memoryBytes);
        assert.equal(s.migration, null);
      }));

    it('pauses and resumes', () =>
      withGuest(async (g) => {
        assert.equal((await g.pause()).state, 'paused');
        assert.equal((await g.status()).state, 'paused');
        assert.equal((await g.resume()).state, 'running');
        assert.equal((await g.status()).state, 'running');
      }));

    it(digests ? 'gives a digest of a paused guest that holds while it stays paused' : 'refuses a digest with a coded error', () =>
      withGuest(async (g) => {
        await g.pause();
        if (!digests) {
          await assert.rejects(g.digest(), refused);
          return;
        }
        const d = await g.digest();
        assert.match(d, /^[0-9a-f]{64}$/);
        assert.equal(await g.digest(), d);
      }),
    );

    it('refuses a second guest process in the same directory, the first untouched', () =>
      withGuest(async (g, dir, config) => {
        await assert.rejects(startGuest(dir, config), refused);
        assert.ok(alive(g.pid));
        assert.equal(Number(readFileSync(join(dir, 'guest.pid'), 'utf8')), g.pid);
        assert.equal((await g.status()).state, 'running');
      }));

    it('is found again once its client is gone, as after an agent restart, in the state it was left', () =>
      withGuest(async (g, dir) => {
        await g.pause();
        g.close();
        const again = await attachGuest(dir);
        assert.ok(again, 'nothing answers on the control socket');
        try {
          assert.equal(again.pid, g.pid);
          assert.equal((await again.status()).state, 'paused');
          await again.resume();
        } finally {
          again.close();
        }
      }));

    it('migrates on this host, committed: the guest then runs at the destination only', async () => {
      const { g: source, config } = await started('src');
      const { source: out, destination, incoming } = await migrateLocally(source, box.dir('dst'), config, { verify: digests });
      try {
        assert.equal(out.phase, 'committed', JSON.stringify(out.result?.error));
        assert.equal(destination.phase, 'committed');
        assert.equal((await incoming.client.status()).state, 'running');
        // The source keeps its copy paused for good until its agent, having recorded the hand-off, finishes it.
        assert.equal((await source.status()).state, 'migrated');
        await source.finish();
        assert.ok(!alive(source.pid), 'the source guest process outlived finish()');
        assert.ok(alive(incoming.client.pid));
        assert.equal((await incoming.client.status()).state, 'running');
      } finally {
        await incoming.client.stop();
      }
    });

    it('migrates on this host, aborted at ready-to-commit: the guest then runs at the source only', async () => {
      const { g: source, config } = await started('src');
      try {
        const { source: out, destination, incoming } = await migrateLocally(source, box.dir('dst'), config, { atReady: 'abort' });
        assert.equal(destination.phase, 'aborted');
        assert.equal(out.phase, 'aborted');
        await waitUntil(() => !alive(incoming.client.pid), 10_000, 'the aborted incoming guest process to exit');
        assert.ok(alive(source.pid));
        assert.equal((await source.status()).state, 'running');
      } finally {
        await source.stop();
      }
    });

    it('keeps a source in doubt paused, refusing SIGTERM and stop, until its agent resolves it', async () => {
      const { g: source, config } = await started('src');
      try {
        // The destination dies at ready-to-commit, before its agent decides: the source cannot know.
        const { source: out } = await migrateLocally(source, box.dir('dst'), config, {
          atReady: async (incoming) => void process.kill(incoming.client.pid, 'SIGKILL'),
        });
        assert.equal(out.phase, 'in-doubt');
        assert.equal((await source.status()).state, 'in-doubt');
        process.kill(source.pid, 'SIGTERM');
        await sleep(300);
        assert.ok(alive(source.pid), 'SIGTERM stopped a guest in doubt');
        await assert.rejects(source.stop(), refused);
        await assert.rejects(source.resume(), refused);
        // Its agent learnt "not committed" from the destination's: the guest runs here again.
        assert.equal((await source.resumeAfterAbort()).state, 'running');
      } finally {
        await source.stop();
      }
    });

    it("refuses a second process started by hand in a running guest's directory before it touches the guest", () =>
      withGuest(async (g, dir) => {
        await sleep(1000); // the workload writes its memory and disk meanwhile
        await g.pause();
        const before = digests ? await g.digest() : null;
        // --incoming: a process that would begin by emptying the guest's disk for an arrival.
        const stray = await runEntry(driver.entry(), [dir, '--incoming']);
        assert.equal(stray.code, 1, stray.stderr);
        assert.match(stray.stderr, /failed to start: another guest process answers/);
        assert.equal(Number(readFileSync(join(dir, 'guest.pid'), 'utf8')), g.pid);
        assert.equal((await g.status()).state, 'paused');
        if (before !== null) assert.equal(await g.digest(), before, 'the stray process changed the guest');
      }));

    it('refuses bad arguments (exit 2) and a directory without a good config (exit 1), leaving nothing', async () => {
      const { dir, config } = await created();
      for (const args of [[], ['--incoming'], [dir, '--outgoing']]) {
        const r = await runEntry(driver.entry(), args);
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /usage: .* GUESTDIR \[--incoming\]/);
      }
      const empty = box.dir();
      mkdirSync(empty);
      const missing = await runEntry(driver.entry(), [empty]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /failed to start: cannot read .*guest\.json/);
      writeFileSync(join(dir, 'guest.json'), JSON.stringify({ ...config, memoryBytes: -1 }));
      const bad = await runEntry(driver.entry(), [dir]);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /failed to start: .*memoryBytes/);
      for (const d of [empty, dir]) assert.ok(!existsSync(join(d, 'guest.pid')) && !existsSync(join(d, 'control.sock')));
      assert.deepEqual(processesMentioning(dir), []);
    });

    it('ignores SIGHUP and ends on SIGTERM, removing its socket and pid file; a new process takes the guest up again', async () => {
      const { g, dir, config } = await started();
      process.kill(g.pid, 'SIGHUP');
      await sleep(300);
      const before = await g.status();
      assert.equal(before.state, 'running');
      process.kill(g.pid, 'SIGTERM');
      await waitUntil(() => !alive(g.pid), 10_000, 'the guest process to exit on SIGTERM');
      assert.ok(!existsSync(join(dir, 'control.sock')) && !existsSync(join(dir, 'guest.pid')));
      const outlived = driver.outlivesProcess(dir, config);
      // Not a destroy: the directory starts the guest again; a guest that outlived its process (a QEMU) is adopted.
      const again = await startGuest(dir, config);
      const after = await again.status();
      assert.equal(after.state, 'running');
      if (outlived) assert.equal(after.hypervisorPid, before.hypervisorPid, 'a new hypervisor, not the one that ran on');
      await again.stop();
    });

    it('its guest process SIGKILLed: endLeft ends whatever it left running, and nothing of the guest runs on', async () => {
      const { g, dir, config } = await started();
      process.kill(g.pid, 'SIGKILL');
      await waitUntil(() => !alive(g.pid), 10_000, 'the guest process to die');
      const outlived = driver.outlivesProcess(dir, config);
      assert.equal(await driver.endLeft(dir, config), outlived, 'endLeft ends exactly what outlived the process');
      assert.ok(!driver.outlivesProcess(dir, config));
      assert.equal(await driver.endLeft(dir, config), false, 'nothing left a second time');
      await waitUntil(() => processesMentioning(`${dir}/`).length === 0, 10_000, `no process left of ${dir}`);
    });

    it('says once in its log, when it runs without the crypto addon, that it seals with node:crypto', async () => {
      // Guest processes inherit this process's environment at spawn. This process has loaded (or
      // failed to load) its own addon before, so the variable changes only theirs.
      nativeUnavailableReason();
      const saved = process.env.FERRY_NATIVE_ADDON;
      process.env.FERRY_NATIVE_ADDON = '/nonexistent/ferry_native.node';
      let srcDir: string;
      let dstDir: string;
      let migrated;
      try {
        const src = await started('src');
        srcDir = src.dir;
        dstDir = box.dir('dst');
        migrated = await migrateLocally(src.g, dstDir, src.config);
        assert.equal(migrated.source.phase, 'committed', JSON.stringify(migrated.source.result?.error));
        await src.g.finish();
      } finally {
        if (saved === undefined) delete process.env.FERRY_NATIVE_ADDON;
        else process.env.FERRY_NATIVE_ADDON = saved;
      }
      await migrated.incoming.client.stop();
      for (const dir of [srcDir, dstDir]) {
        const notices = readFileSync(join(dir, 'guest.log'), 'utf8')
          .split('\n')
          .filter((l) => /using node:crypto/.test(l));
        assert.equal(notices.length, 1, `${dir}: ${notices.join(' | ')}`);
        assert.match(notices[0]!, /^\S+Z using node:crypto and a TypeScript zero-page scan: .*not built/);
      }
    });

    it('stops leaving no process, and a destroyed guest leaves no directory either', async () => {
      const { g, dir, config } = await started();
      await g.stop();
      assert.ok(!alive(g.pid));
      assert.equal(await attachGuest(dir), null);
      assert.ok(!existsSync(join(dir, 'control.sock')));
      assert.ok(!existsSync(join(dir, 'guest.pid')));
      assert.ok(!driver.outlivesProcess(dir, config), 'the guest runs on after stop');
      // Stopped, not gone: the same directory starts the guest again, which destroy then removes.
      const again = await startGuest(dir, config);
      assert.notEqual(again.pid, g.pid);
      await again.destroy();
      assert.ok(!alive(again.pid));
      assert.ok(!existsSync(dir));
      await waitUntil(() => processesMentioning(dir).length === 0, 10_000, `no process left of ${dir}`);
    });
  });
}
