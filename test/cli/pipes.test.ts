/**
 * Output into a pipe whose reader has gone (`ferry ... | head -1`): the command ends quietly, as
 * Unix tools do — no EPIPE trace on stderr — and with its own exit status.
 */
import assert from 'node:assert/strict';
import { startFerry } from '../support/cli.js';

/** Runs ferry with its stdout's reader gone before the first byte; resolves with its exit status and stderr. */
async function withClosedStdout(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; stderr: string }> {
  const child = startFerry(args, env);
  child.process.stdout.destroy();
  const { status, stderr } = await child.ended;
  return { status, stderr };
}

describe('cli: output into a closed pipe', function () {
  this.timeout(60_000);

  it('help: exit 0, nothing on stderr', async function () {
    const r = await withClosedStdout(['--help']);
    assert.equal(r.stderr, '');
    assert.equal(r.status, 0);
  });

  it('an error under --json: its exit status and its one line, no trace', async function () {
    const r = await withClosedStdout(['vm', 'list', '--json'], { FERRY_CLUSTER: '/nonexistent/cluster.yaml' });
    assert.equal(r.status, 2);
    assert.doesNotMatch(r.stderr, /EPIPE|at .*\.js:\d+/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });

  it('the completion script: exit 0, no trace', async function () {
    const r = await withClosedStdout(['completion']);
    assert.doesNotMatch(r.stderr, /EPIPE|Error/);
    assert.equal(r.status, 0);
  });
});
