/**
 * The root hook of test/support/fresh-build.ts: a run whose child processes would start an older
 * build than the sources it tests fails before any test, naming the stale file and the fix.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { staleBuildError, staleOutputs } from './support/fresh-build.js';

const root = fileURLToPath(new URL('..', import.meta.url));

describe('tests run the build of their sources', function () {
  let tree: string;
  const file = (rel: string, mtimeSeconds: number): void => {
    mkdirSync(path.dirname(path.join(tree, rel)), { recursive: true });
    writeFileSync(path.join(tree, rel), '');
    utimesSync(path.join(tree, rel), mtimeSeconds, mtimeSeconds);
  };
  beforeEach(function () {
    tree = mkdtempSync(path.join(os.tmpdir(), 'ferry-fresh-build-'));
  });
  afterEach(function () {
    rmSync(tree, { recursive: true, force: true });
  });

  it('finds each source whose output is missing or older, and nothing once all are built', function () {
    file('src/a.ts', 1000);
    file('src/room/b.ts', 1000);
    file('src/room/c.ts', 1000);
    file('src/types.d.ts', 1000);
    file('dist/a.js', 2000);
    file('dist/room/b.js', 999);
    assert.deepEqual(staleOutputs(tree), [
      { source: 'src/room/b.ts', output: 'dist/room/b.js', missing: false },
      { source: 'src/room/c.ts', output: 'dist/room/c.js', missing: true },
    ]);
    assert.match(String(staleBuildError(tree)), /dist\/room\/b\.js is older than src\/room\/b\.ts \(and 1 more\).*npm run build/);
    file('dist/room/b.js', 1000);
    file('dist/room/c.js', 1001);
    assert.deepEqual(staleOutputs(tree), []);
    assert.equal(staleBuildError(tree), null);
  });

  it('fails a single-file mocha run at once when a source is newer than its build', function () {
    // dist/common/units.js made older than its source for the length of one run, then put back.
    const output = path.join(root, 'dist/common/units.js');
    const source = statSync(path.join(root, 'src/common/units.ts'));
    const before = statSync(output);
    utimesSync(output, before.atime, new Date(source.mtimeMs - 1000));
    let r;
    try {
      const mocha = path.join(path.dirname(createRequire(import.meta.url).resolve('mocha/package.json')), 'bin/mocha.js');
      r = spawnSync(process.execPath, [mocha, 'test/common/units.test.ts'], { cwd: root, encoding: 'utf8', timeout: 60_000 });
    } finally {
      utimesSync(output, before.atime, before.mtime);
    }
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /"before all" hook/);
    assert.match(r.stdout, /dist\/ is stale: dist\/common\/units\.js is older than src\/common\/units\.ts.*run `npm run build` first/);
    assert.match(r.stdout, /0 passing/, 'no test ran');
  });
});
