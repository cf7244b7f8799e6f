// `npm run check:format:native`: the addon's C++ in the style of .clang-format. Skipped, saying
// why, where clang-format is not installed (CI installs it); `--fix` rewrites the files.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';

const dirs = ['native', 'native/fuzz'];
const files = dirs.flatMap((d) =>
  readdirSync(d)
    .filter((f) => /\.(cc|h)$/.test(f))
    .map((f) => path.join(d, f)),
);
if (spawnSync('clang-format', ['--version']).error) {
  console.log('check:format:native: skipped: clang-format is not installed (Debian: apt-get install clang-format)');
  process.exit(0);
}
const fix = process.argv.includes('--fix');
const r = spawnSync('clang-format', fix ? ['-i', ...files] : ['--dry-run', '--Werror', ...files], { stdio: 'inherit' });
if (r.status !== 0) {
  console.error('check:format:native: run `npm run check:format:native -- --fix` to format native/');
  process.exit(1);
}
console.log(`check:format:native: ${files.length} files in the style of .clang-format`);
