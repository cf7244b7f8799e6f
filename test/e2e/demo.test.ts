/**
 * `ferry demo` runs to completion with nothing set up, and leaves nothing behind: no agent or guest
 * process, no temporary directory — also when interrupted with SIGINT half-way. A smaller guest than
 * the default 1 GiB keeps the suite quick on a shared machine.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { BIN, ferry } from '../support/cluster.js';
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
    const child = spawn(process.execPath, [BIN, 'demo', '--memory', '256MiB', '--workload', 'kv:get=1000,set=20000', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let dir = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d) => {
        stdout += d;
        const demo = stdout.split('\n').find((l) => l.includes('"type":"demo"'));
        if (demo && !dir) {
          dir = JSON.parse(demo).dir;
          dirs.push(dir);
        }
        if (stdout.includes('"type":"started"')) resolve();
      });
      void exited.then(() => reject(new Error(`demo ended before the migration started: ${stderr}`)));
    });
    assert.ok(processesMentioning(dir).length >= 3, 'two agents and a guest run (so the check below can fail)');
    child.kill('SIGINT');
    const code = await exited;
    assert.equal(code, 1, stderr);
    assert.match(stderr, /interrupted by SIGINT; everything the demo made is removed/);
    assert.equal(existsSync(dir), false, `${dir} removed`);
    assert.deepEqual(processesMentioning(dir), []);
  });
});
