/**
 * `ferry demo` runs to completion with nothing set up, and leaves nothing behind: no agent or guest
 * process, no temporary directory — also when interrupted with SIGINT half-way. A smaller guest than
 * the default 1 GiB keeps the suite quick on a shared machine.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { ferry, startFerry } from '../support/cli.js';
import { jsonLines } from '../support/json-output.js';
import { processesMentioning } from '../support/processes.js';

describe('e2e: ferry demo', function () {
  const dirs: string[] = [];
  after(function () {
    // Should there be leftovers, do not leave them to the next suite.
    for (const d of dirs) for (const pid of processesMentioning(d)) process.kill(pid, 'SIGKILL');
  });

  it('runs an encrypted migration between two agents it starts, and removes everything', function () {
    const r = ferry(['demo', '--memory', '128MiB', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const lines = jsonLines(r.stdout);
    const dir = lines[0]!.dir as string;
    dirs.push(dir);
    assert.equal(lines[0]!.type, 'demo');
    const result = lines.pop()!;
    assert.equal(result.ok, true);
    assert.equal(result.mode, 'encrypted');
    assert.equal(result.from, 'a');
    assert.equal(result.to, 'b');
    assert.equal(existsSync(dir), false, `${dir} removed`);
    assert.deepEqual(processesMentioning(dir), []);
  });

  it('cleans up when interrupted with SIGINT during the migration', async function () {
    const child = startFerry(['demo', '--memory', '256MiB', '--workload', 'kv:get=1000,set=20000', '--json']);
    const [demo] = await child.waitForOutput('stdout', /^.*"type":"demo".*\n/m, 100_000);
    const dir = (JSON.parse(demo) as { dir: string }).dir;
    dirs.push(dir);
    await child.waitForOutput('stdout', /"type":"started"/, 100_000);
    assert.ok(processesMentioning(dir).length >= 3, 'two agents and a guest run (so the check below can fail)');
    child.process.kill('SIGINT');
    const { status: code } = await child.ended;
    assert.equal(code, 1, child.stderr());
    assert.match(child.stderr(), /interrupted by SIGINT; everything the demo made is removed/);
    assert.equal(existsSync(dir), false, `${dir} removed`);
    assert.deepEqual(processesMentioning(dir), []);
  });
});
