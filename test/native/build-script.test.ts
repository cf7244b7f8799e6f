/**
 * `npm install` runs scripts/build-native.mjs: without a compiler it must say so and succeed
 * (ferry falls back to node:crypto), and with --strict (npm run build:native) fail. Run in a copy
 * of the project in a temporary directory, with a PATH that holds no toolchain.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

describe('native build script without a toolchain', function () {
  let dir = '';

  before(function () {
    dir = mkdtempSync(join(tmpdir(), 'ferry-build-'));
    for (const entry of ['native', 'scripts', 'CMakeLists.txt', 'package.json'])
      cpSync(join(root, entry), join(dir, entry), { recursive: true });
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  });

  after(function () {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const build = (...args: string[]) =>
    spawnSync(process.execPath, ['scripts/build-native.mjs', ...args], {
      cwd: dir,
      env: { ...process.env, PATH: '/nonexistent' },
      encoding: 'utf8',
      timeout: 60_000,
    });

  it('succeeds, saying why there is no addon and how to build it', function () {
    const r = build();
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /native addon did not build.*node:crypto/);
    assert.match(r.stderr, /npm run build:native/);
  });

  it('fails with --strict', function () {
    assert.notEqual(build('--strict').status, 0);
  });
});
