/**
 * The QMP client and QEMU migration runner of `ferry bench migrate`, against a real QEMU (skipped,
 * saying why, when qemu-system-x86_64 is not installed) and against a socket that speaks nonsense.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { QmpClient } from '../../src/bench/qmp.js';
import { makeQemuTlsDir, qemuMissing, QemuProcess, runQemuMigration, writeRandomFile } from '../../src/bench/qemu-migration.js';

describe('bench: QMP client and QEMU migration', function () {
  let dir: string;
  before(function () {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-qmp-'));
  });
  after(function () {
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a peer that does not speak QMP, with a coded error', async function () {
    const sock = path.join(dir, 'bad.sock');
    const server = net.createServer((s) => s.end('this is not json\n'));
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      await assert.rejects(QmpClient.connect(sock, 2000), (err: Error & { code?: string }) => err.code === 'ERR_FERRY_INPUT' || err.code === 'ERR_FERRY_NETWORK');
    } finally {
      server.close();
    }
  });

  describe('with QEMU', function () {
    before(function () {
      const missing = qemuMissing();
      if (missing) {
        console.log(`      skipped: ${missing}`);
        this.skip();
      }
    });

    it('negotiates, runs commands, and reports QEMU errors with their class', async function () {
      this.timeout(30_000);
      const { qemu, qmp } = await QemuProcess.start(dir, 'q', ['-accel', 'tcg', '-nographic', '-nodefaults', '-S', '-m', '16M']);
      try {
        const status = await qmp.execute<{ status: string; running: boolean }>('query-status');
        assert.equal(status.running, false);
        assert.equal(status.status, 'prelaunch');
        await assert.rejects(qmp.execute('no-such-command'), /CommandNotFound/);
        const info = await qmp.execute<{ qemu: { major: number } }>('query-version');
        assert.ok(info.qemu.major >= 5);
      } finally {
        qmp.close();
        await qemu.stop();
      }
      assert.notEqual(qemu.child.exitCode ?? qemu.child.signalCode, null);
    });

    it('migrates a guest of random RAM, plain and over TLS, and reports query-migrate figures', async function () {
      this.timeout(60_000);
      const ram = path.join(dir, 'ram');
      const size = 32 * 2 ** 20;
      writeRandomFile(ram, size);
      const tlsDir = await makeQemuTlsDir(dir);
      for (const mode of ['plain', 'multifd-tls'] as const) {
        const r = await runQemuMigration({ dir, ramFile: ram, memoryBytes: size, mode, tlsDir });
        assert.equal(r.status, 'completed');
        assert.ok(Number.isFinite(r.totalMs) && r.totalMs >= 0 && r.downtimeMs >= 0);
        assert.ok(r.transferredBytes >= size, `${mode}: ${r.transferredBytes}`);
      }
    });
  });
});
