/**
 * The README's "A cluster by hand" block, pasted whole into a fresh shell: bash runs it as it is,
 * in an empty directory where `npx ferry` finds this checkout as `npm install` would have put it
 * (node_modules/.bin/ferry), with no FERRY_CLUSTER of ours. The only change made to the text is its
 * four fixed ports, swapped for free ones so that the test does not fight whatever else listens.
 * It must end with the guest moved to b, and the agents' logs must stay off the terminal.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN, ferryOk } from '../support/cli.js';
import { freePort } from '../support/cluster.js';
import { jsonLines } from '../support/json-output.js';

const README = fileURLToPath(new URL('../../README.md', import.meta.url));

/** The first sh block after the heading. */
function readmeBlock(heading: string): string {
  const text = readFileSync(README, 'utf8');
  const at = text.indexOf(`## ${heading}\n`);
  assert.ok(at >= 0, `README.md has no "## ${heading}"`);
  const m = /```sh\n([\s\S]*?)```/.exec(text.slice(at));
  assert.ok(m, `no sh block under "## ${heading}"`);
  return m[1]!;
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

/** The process a pid file names (an agent, a guest), and its group. */
function killPidFile(file: string): void {
  if (!existsSync(file)) return;
  const pid = Number(readFileSync(file, 'utf8'));
  killGroup(pid);
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

describe('e2e: the README, pasted into a fresh shell', function () {
  this.timeout(300_000);
  let root: string;

  before(function () {
    root = mkdtempSync(path.join(os.tmpdir(), 'ferry-readme-'));
  });
  after(function () {
    // The agents (in the shell's process group, killed below) left their guests running: those are
    // their own sessions, found by their pid files.
    for (const host of ['a', 'b']) {
      const guests = path.join(root, host, 'guests');
      for (const g of existsSync(guests) ? readdirSync(guests) : []) killPidFile(path.join(guests, g, 'guest.pid'));
    }
    rmSync(root, { recursive: true, force: true });
  });

  it('"A cluster by hand" ends with the guest moved, and no agent log on the terminal', async function () {
    let block = readmeBlock('A cluster by hand');
    for (const port of ['7001', '7002', '7101', '7102']) {
      assert.ok(block.includes(`127.0.0.1:${port}`), `the block no longer uses port ${port}: update this test`);
      block = block.replaceAll(`127.0.0.1:${port}`, `127.0.0.1:${await freePort()}`);
    }
    // What `npm install` of ferry leaves for npx to find.
    mkdirSync(path.join(root, 'node_modules', '.bin'), { recursive: true });
    symlinkSync(BIN, path.join(root, 'node_modules', '.bin', 'ferry'));
    writeFileSync(path.join(root, 'package.json'), '{"private": true}\n');
    const env = { ...process.env };
    delete env.FERRY_CLUSTER;
    const shell = spawn('bash', ['-c', block], { cwd: root, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    shell.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    shell.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    let status: number | null;
    try {
      status = await new Promise<number | null>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the block did not end within 240 s: ${out}`)), 240_000);
        shell.once('exit', (code) => {
          clearTimeout(timer);
          resolve(code);
        });
      });
      assert.equal(status, 0, out);
      assert.match(out, /guest web1 running on a/);
      assert.match(out, /web1 moved a -> b, encrypted/);
      assert.doesNotMatch(out, /"msg":/, `agent log lines reached the terminal:\n${out}`);
      assert.doesNotMatch(out, /ECONNREFUSED|\[ERR_FERRY_/, out);
      const file = path.join(root, 'cluster', 'cluster.yaml');
      const guests = jsonLines(ferryOk(['vm', 'list', '--json'], { FERRY_CLUSTER: file }).stdout);
      assert.deepEqual(
        guests.map((g) => [g.name, g.host, g.state]),
        [['web1', 'b', 'running']],
      );
      // The agents logged where the block told them to.
      for (const host of ['a', 'b']) assert.match(readFileSync(path.join(root, `${host}.log`), 'utf8'), /"msg":"agent ready"/);
    } finally {
      killGroup(shell.pid!);
      // Agents started by the block: their pid files name them even if they left the shell's group.
      for (const host of ['a', 'b']) killPidFile(path.join(root, host, 'agent.pid'));
    }
  });
});
