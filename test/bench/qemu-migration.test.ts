/**
 * The QEMU migration runner of `ferry bench migrate` against a real QEMU (skipped, saying why, when
 * qemu-system-x86_64 is not installed). The QMP client it drives QEMU with is the product's
 * (test/guest/qemu/qmp.test.ts).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { makeQemuTlsDir, qemuMissing, runQemuMigration, writeRandomFile } from '../../src/bench/qemu-migration.js';

describe('bench: QEMU migration', function () {
  let dir: string;
  before(function () {
    const missing = qemuMissing();
    if (missing) {
      console.log(`      skipped: ${missing}`);
      this.skip();
    }
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-qemu-migration-'));
  });
  after(function () {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('migrates a guest of random RAM, plain, multifd and over TLS, and reports query-migrate figures', async function () {
    this.timeout(90_000);
    const ram = path.join(dir, 'ram');
    const size = 32 * 2 ** 20;
    writeRandomFile(ram, size);
    const tlsDir = await makeQemuTlsDir(dir);
    for (const mode of ['plain', 'multifd', 'tls', 'multifd-tls'] as const) {
      const r = await runQemuMigration({ dir, ramFile: ram, memoryBytes: size, mode, tlsDir });
      assert.equal(r.status, 'completed');
      assert.ok(Number.isFinite(r.totalMs) && r.totalMs > 0 && r.downtimeMs >= 0, `${mode}: ${JSON.stringify(r)}`);
      assert.ok(r.transferredBytes >= size, `${mode}: ${r.transferredBytes}`);
    }
  });
});
