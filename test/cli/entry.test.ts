/** The command line's contract: exit codes, one-line errors on stderr, JSON on stdout with --json. */
import assert from 'node:assert/strict';
import { ferry } from '../support/cli.js';

describe('ferry entry point', function () {
  it('prints help with exit 0', function () {
    const r = ferry(['--help']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /ferry <command>/);
  });

  it('exits 2 with one line on stderr for an unknown command', function () {
    const r = ferry(['frobnicate']);
    assert.equal(r.status, 2);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /frobnicate/);
    assert.equal(r.stdout, '');
  });

  it('exits 2 for an unknown flag and prints a JSON error with --json', function () {
    const r = ferry(['bench', '--no-such-flag', '--json']);
    assert.equal(r.status, 2);
    const last = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.equal(last.ok, false);
    assert.equal(last.error.code, 'ERR_FERRY_USAGE');
  });
});
