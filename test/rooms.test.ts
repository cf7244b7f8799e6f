/**
 * The import rule of src/ (.dependency-cruiser.cjs, docs/architecture.md "Rooms"): the tree as it is
 * passes, and a tree with one upward import fails — so the check run by `npm test` can fail.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const depcruise = path.join(root, 'node_modules', '.bin', 'depcruise');
const config = path.join(root, '.dependency-cruiser.cjs');

function cruise(cwd: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(depcruise, ['src', '--config', config, '--output-type', 'err'], { cwd }, (err, stdout, stderr) =>
      resolve({ code: (err as { code?: number } | null)?.code ?? 0, out: `${stdout}${stderr}` }),
    );
  });
}

describe('rooms: imports run one way', function () {
  this.timeout(60_000);

  it('src/ as it is has no import against the rule', async function () {
    const { code, out } = await cruise(root);
    assert.equal(code, 0, out);
  });

  it('a room importing one above it fails the check, naming the rule and the import', async function () {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-rooms-'));
    try {
      const file = (p: string, text: string) => {
        mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
        writeFileSync(path.join(dir, p), text);
      };
      file('tsconfig.json', JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true } }));
      file('src/errors.ts', 'export const E = 1;\n');
      file('src/agent/agent.ts', "import { E } from '../errors.js';\nexport const A = E;\n");
      const good = "import { E } from '../errors.js';\nexport const C = E;\n";
      file('src/common/names.ts', good);
      assert.equal((await cruise(dir)).code, 0, 'the downward imports alone pass');
      file('src/common/names.ts', `${good}import { A } from '../agent/agent.js';\nexport const D = A;\n`);
      const { code, out } = await cruise(dir);
      assert.notEqual(code, 0, out);
      assert.match(out, /common-imports-downward-only/);
      assert.match(out, /src\/common\/names\.ts → src\/agent\/agent\.ts/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
