/**
 * CMakeLists.txt (cmake-js) and binding.gyp (node-gyp) must build the same addon: the same
 * sources and the same defines, and every C++ file of the addon must be in both.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';

const root = new URL('../../', import.meta.url);
const read = (file: string) => readFileSync(new URL(file, root), 'utf8');

function cmakeList(text: string, name: string): string[] {
  const m = new RegExp(`set\\(${name}\\s+([^)]*)\\)`).exec(text);
  assert.ok(m, `CMakeLists.txt sets ${name}`);
  return m[1]!.split(/\s+/).filter((s) => s !== '' && !s.startsWith('#'));
}

describe('native build files', function () {
  const cmake = read('CMakeLists.txt');
  const gyp = JSON.parse(read('binding.gyp')) as { targets: { sources: string[]; defines: string[] }[] };
  const target = gyp.targets[0]!;

  it('list the same sources', function () {
    assert.deepEqual([...cmakeList(cmake, 'FERRY_SOURCES')].sort(), [...target.sources].sort());
  });

  it('set the same defines', function () {
    assert.deepEqual([...cmakeList(cmake, 'FERRY_DEFINES')].sort(), [...target.defines].sort());
  });

  it('build every C++ file of the addon (the fuzz harness aside)', function () {
    const files = readdirSync(new URL('native/', root))
      .filter((f) => f.endsWith('.cc'))
      .map((f) => `native/${f}`)
      .sort();
    assert.deepEqual([...target.sources].sort(), files);
  });
});
