/**
 * A mocha root hook (registered in .mocharc.json): the run fails before any test when dist/ is not
 * built from the current src/.
 *
 * Tests import src/ through tsx, but every child process they start runs dist/: agents (bin/ferry
 * loads dist/cli), guest processes (dist/guest/DRIVER/main.js), their workload workers. Without
 * a build after an edit, a test would check the new code in its own process and the old code in
 * its children. Running the children from src/ through tsx instead would mean teaching bin/ferry,
 * the guest launcher and the worker entry that they run under a test, and loading tsx into every
 * agent and guest; comparing each output's time with its source's is a stat per file, and
 * `npm test` builds first, so only a direct `npx mocha` after an edit meets this hook. A run with
 * --no-config skips it unless it adds `--require test/support/fresh-build.ts`.
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Every src/**\/*.ts (declarations aside) under `root` whose dist/**\/*.js is missing or older; paths relative to `root`. */
export function staleOutputs(root: string): { source: string; output: string; missing: boolean }[] {
  const stale: { source: string; output: string; missing: boolean }[] = [];
  const src = path.join(root, 'src');
  for (const entry of readdirSync(src, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.ts') || entry.name.endsWith('.d.ts')) continue;
    const source = path.relative(root, path.join(entry.parentPath, entry.name));
    const output = path.join('dist', path.relative('src', source)).replace(/\.ts$/, '.js');
    const built = statSync(path.join(root, output), { throwIfNoEntry: false });
    if (!built || built.mtimeMs < statSync(path.join(root, source)).mtimeMs) stale.push({ source, output, missing: !built });
  }
  return stale.sort((a, b) => a.source.localeCompare(b.source));
}

/** The error the hook fails with, or null when dist/ is up to date. */
export function staleBuildError(root: string): Error | null {
  const [first, ...rest] = staleOutputs(root);
  if (!first) return null;
  const what = first.missing ? `${first.output} is missing (from ${first.source})` : `${first.output} is older than ${first.source}`;
  const more = rest.length > 0 ? ` (and ${rest.length} more)` : '';
  return new Error(`dist/ is stale: ${what}${more}. Child processes (agents, guests, workers) run dist/: run \`npm run build\` first.`);
}

export const mochaHooks = {
  beforeAll(): void {
    const err = staleBuildError(ROOT);
    if (err) throw err;
  },
};
