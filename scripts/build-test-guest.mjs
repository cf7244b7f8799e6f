#!/usr/bin/env node
// Assembles ferry's QEMU test guest (native/test-guest/test-guest.asm) with nasm into the image
// checked in beside it, so that an install without nasm still has the guest.
//   --check         build into a temporary file and exit 1 unless it equals the checked-in image
//   --image FILE    the image to write or check (default native/test-guest/test-guest.bin)
// nasm's flat binaries carry no timestamps or paths: the same source gives the same bytes.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'native', 'test-guest', 'test-guest.asm');
const args = process.argv.slice(2);
const check = args.includes('--check');
const imageAt = args.indexOf('--image');
const image = imageAt >= 0 && args[imageAt + 1] ? resolve(args[imageAt + 1]) : join(root, 'native', 'test-guest', 'test-guest.bin');
const unknown = args.filter((a, i) => a !== '--check' && !(imageAt >= 0 && (i === imageAt || i === imageAt + 1)));
if (unknown.length > 0 || (imageAt >= 0 && !args[imageAt + 1])) {
  process.stderr.write(`build-test-guest: usage: build-test-guest.mjs [--check] [--image FILE] (got ${args.join(' ')})\n`);
  process.exit(2);
}

/** Runs nasm; returns null or why it failed. */
function assemble(out) {
  const r = spawnSync('nasm', ['-f', 'bin', '-o', out, source], { encoding: 'utf8' });
  if (r.error) return `nasm cannot run (${/** @type {NodeJS.ErrnoException} */ (r.error).code}); install nasm to rebuild the test guest`;
  if (r.status !== 0) return `nasm failed (exit ${r.status}):\n${r.stderr}`;
  return null;
}

/** Returns null when `image` equals a fresh build, else why not. */
function compare(fresh) {
  const failed = assemble(fresh);
  if (failed) return failed;
  const built = readFileSync(fresh);
  let kept;
  try {
    kept = readFileSync(image);
  } catch (err) {
    return `cannot read ${image} (${/** @type {NodeJS.ErrnoException} */ (err).code})`;
  }
  if (built.equals(kept)) return null;
  let at = 0;
  while (at < built.length && at < kept.length && built[at] === kept[at]) at++;
  return (
    `${image} (${kept.length} bytes) differs from a fresh build (${built.length} bytes) from byte ${at}; ` +
    'run `node scripts/build-test-guest.mjs` and commit the image'
  );
}

let failed;
if (check) {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-test-guest-'));
  try {
    failed = compare(join(dir, 'test-guest.bin'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (!failed) process.stdout.write(`build-test-guest: ${image} equals a fresh build\n`);
} else {
  failed = assemble(image);
  if (!failed) process.stdout.write(`build-test-guest: wrote ${image} (${readFileSync(image).length} bytes)\n`);
}
if (failed) {
  process.stderr.write(`build-test-guest: ${failed}\n`);
  process.exitCode = 1;
}
