#!/usr/bin/env node
// Builds the native addon with cmake-js into build/Release/ferry_native.node. Run by
// `npm install`: a missing compiler or a failed build never fails the install; ferry then says
// once, at run time, why the addon is missing and falls back to node:crypto.
//   --strict    a failed build is an error (npm run build:native)
//   --sanitize  AddressSanitizer + UndefinedBehaviorSanitizer build into build-asan/ (CI)
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const strict = process.argv.includes('--strict');
const sanitize = process.argv.includes('--sanitize');

if (!existsSync(join(root, 'CMakeLists.txt'))) process.exit(0);
if (process.env.FERRY_SKIP_NATIVE === '1') {
  process.stderr.write('ferry: FERRY_SKIP_NATIVE=1, not building the native addon\n');
  process.exit(0);
}
// Node's own headers carry OpenSSL's (<prefix>/include/node/openssl): the addon's EVP code uses
// them and calls the OpenSSL inside the node binary.
const nodeInclude = join(dirname(process.execPath), '..', 'include', 'node');
const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
const args = [cmakeJs, 'compile', '--log-level', 'warn', `--CDFERRY_NODE_INCLUDE=${nodeInclude}`];
if (sanitize) args.push('--out', 'build-asan', '--CDFERRY_SANITIZE=ON');
const result = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
if (result.status !== 0) {
  const why = result.error ? result.error.message : `cmake-js exited with ${result.status}`;
  process.stderr.write(
    `ferry: the native addon did not build (${why}); ferry will use node:crypto instead.\n` +
      '       To build it: install cmake and a C++ compiler, then run `npm run build:native`.\n',
  );
  process.exit(strict ? 1 : 0);
}
