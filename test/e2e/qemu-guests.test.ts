/**
 * QEMU guests from the operator's side: `ferry vm create --driver qemu`, `vm list`, `vm console`
 * (and --follow, across a migration), `vm destroy`, `probe`, against real agents as processes
 * running real QEMU with ferry's test guest. Bad flags are refused with exit 2 and nothing made;
 * a host without QEMU (FERRY_QEMU pointing nowhere) refuses QEMU guests with exit 1 and nothing
 * made. The QEMU part is skipped, saying why, without qemu-system-x86_64.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseTestGuestLog } from '../../src/guest/qemu/test-guest.js';
import { resolveQemu } from '../../src/guest/qemu/probe.js';
import { ferry, ferryAsync, ferryOk, startFerry, type CliResult } from '../support/cli.js';
import { TestCluster } from '../support/cluster.js';
import { jsonLines } from '../support/json-output.js';
import { alive, processesMentioning } from '../support/processes.js';
import { waitUntil } from '../support/wait.js';

/** Starts an agent with `env` added to its environment (the agent reads FERRY_QEMU when it probes). */
async function withEnv<T>(env: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** What a host's state directory holds of guest `name`: its record and its directory. */
function guestFiles(cluster: TestCluster, host: string, name: string): string[] {
  const guests = path.join(cluster.hostDir(host), 'guests');
  return existsSync(guests) ? readdirSync(guests).filter((f) => f === name || f === `${name}.json`) : [];
}

function stopAll(cluster: TestCluster | undefined): Promise<void> {
  if (!cluster) return Promise.resolve();
  return cluster.stop().then(() => {
    // A QEMU outlives its agent and its guest process: the suite's own go by the directory they name.
    for (const pid of processesMentioning(cluster.root)) process.kill(pid, 'SIGKILL');
  });
}

describe('e2e: QEMU guests through the CLI (real agents, real QEMU, the test guest)', function () {
  this.timeout(300_000);
  let cluster: TestCluster;
  const run = (args: string[]) => ferry(args, cluster.env);

  before(async function () {
    const { missing } = resolveQemu();
    if (missing) {
      console.log(`      skipped: ${missing}`);
      this.skip();
    }
    cluster = TestCluster.create('ferry-qemu-cli-');
    for (const h of ['a', 'b']) await cluster.addHost(h);
    await cluster.startAgent('a');
    await cluster.startAgent('b');
  });
  after(() => stopAll(cluster));

  it('vm create --driver qemu starts the guest; vm list shows it running with driver qemu, in the table and in --json', function () {
    const created = run([
      'vm',
      'create',
      'q1',
      '--host',
      'a',
      '--driver',
      'qemu',
      '--memory',
      '64MiB',
      '--append',
      'fill=32 window=4 rate=2048',
    ]);
    assert.equal(created.status, 0, created.stderr);
    assert.match(created.stdout, /^guest q1 running on a: 64\.0 MiB memory, 1 CPU, pc-i440fx-7\.2, (KVM|TCG)\n$/);
    const table = run(['vm', 'list']);
    assert.equal(table.status, 0, table.stderr);
    const [header, row] = table.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(/\s{2,}/));
    assert.deepEqual(header, ['NAME', 'HOST', 'STATE', 'MEMORY', 'DISK', 'DRIVER', 'NIC', 'ENCRYPTED-MIGRATION']);
    assert.deepEqual(row, ['q1', 'a', 'running', '64.0 MiB', '-', 'qemu', 'virtio', 'opportunistic']);
    const [line] = jsonLines(run(['vm', 'list', '--json']).stdout);
    assert.equal(line!.driver, 'qemu');
    assert.equal(line!.state, 'running');
    assert.equal(line!.cpus, 1);
    assert.match(line!.accel, /^(kvm|tcg)$/);
    assert.equal(line!.workload, undefined);
  });

  it("vm console prints the test guest's serial console: its boot line, the fill, ticks and intact checks", async function () {
    // A tick comes a second of guest time after boot, a check as soon as the fill is re-read: under
    // KVM the first check can come first.
    await waitUntil(
      () => {
        const text = run(['vm', 'console', 'q1']).stdout;
        return /check \d+ ok/.test(text) && /^tick \d+/m.test(text);
      },
      60_000,
      'a memory check and a tick on the console',
    );
    const r = run(['vm', 'console', 'q1']);
    assert.equal(r.status, 0, r.stderr);
    const lines = parseTestGuestLog(r.stdout);
    assert.equal(lines[0]!.kind, 'boot');
    assert.ok(lines.some((l) => l.kind === 'filled'));
    assert.ok(lines.some((l) => l.kind === 'tick'));
    assert.ok(lines.some((l) => l.kind === 'check' && l.ok));
    assert.deepEqual(
      lines.filter((l) => l.kind === 'fail' || l.kind === 'error' || (l.kind === 'check' && !l.ok)),
      [],
    );
    // What the host keeps, byte for byte (piped output is the text as the guest wrote it).
    const logFile = path.join(cluster.hostDir('a'), 'guests', 'q1', 'console.log');
    assert.ok(readFileSync(logFile, 'utf8').startsWith(r.stdout), 'the console printed is the start of the log');
    const json = jsonLines(run(['vm', 'console', 'q1', '--json']).stdout);
    const log = readFileSync(logFile, 'utf8');
    const result = json.pop()!;
    assert.deepEqual(result, { type: 'result', ok: true, vm: 'q1', host: 'a', offset: result.offset, ended: 'end', error: null });
    assert.equal(json.map((e) => e.text).join(''), log.slice(0, result.offset));
  });

  it('vm console --follow streams what the guest writes, follows it to the host it migrates to, and ends at Ctrl-C with exit 0', async function () {
    const child = startFerry(['vm', 'console', 'q1', '--follow', '--json'], cluster.env);
    const stderr = () => child.stderr();
    const events = () =>
      child
        .stdout()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, any>);
    const ticksOn = (host: string) =>
      events()
        .filter((e) => e.type === 'console' && e.host === host)
        .flatMap((e) => (e.text as string).match(/tick \d+/g) ?? []);
    try {
      await waitUntil(() => ticksOn('a').length > 0, 30_000, 'the console so far');
      const first = ticksOn('a').length;
      await waitUntil(
        () => ticksOn('a').length >= first + 2,
        30_000,
        () => `two new ticks streamed: ${stderr()}`,
      );
      const moved = await ferryAsync(['migrate', 'q1', '--to', 'b'], cluster.env);
      assert.equal(moved.status, 0, moved.stderr);
      await waitUntil(
        () => ticksOn('b').length >= 2,
        60_000,
        () => `ticks from b after the move: ${stderr()}`,
      );
      assert.deepEqual(
        events().filter((e) => e.type === 'moved'),
        [{ type: 'moved', vm: 'q1', from: 'a', to: 'b' }],
      );
      child.process.kill('SIGINT');
      assert.equal(await child.exited, 0, stderr());
    } finally {
      child.process.kill('SIGKILL');
    }
    const result = events().pop()!;
    assert.equal(result.type, 'result');
    assert.equal(result.host, 'b');
    assert.equal(result.ended, 'interrupted');
    const onB = events()
      .filter((e) => e.type === 'console' && e.host === 'b')
      .map((e) => e.text)
      .join('');
    const lines = parseTestGuestLog(onB);
    assert.deepEqual(
      lines.filter((l) => l.kind === 'fail' || l.kind === 'error' || (l.kind === 'check' && !l.ok)),
      [],
    );
  });

  it('vm destroy ends the QEMU and leaves no process and no guest directory; a --follow of its console ends there', async function () {
    const dir = path.join(cluster.hostDir('b'), 'guests', 'q1');
    const qemuPid = Number(readFileSync(path.join(dir, 'qemu.pid'), 'utf8'));
    assert.ok(alive(qemuPid), 'QEMU runs the guest on b (so the checks below can fail)');
    const follower = startFerry(['vm', 'console', 'q1', '--follow'], cluster.env);
    try {
      await follower.waitForOutput('stdout', /tick \d+/, 30_000);
      const r = ferryAsync(['vm', 'destroy', 'q1'], cluster.env);
      assert.equal(await follower.exited, 0, follower.stderr());
      const destroyed = await r;
      assert.equal(destroyed.status, 0, destroyed.stderr);
      assert.equal(destroyed.stdout, 'guest q1 destroyed on b\n');
    } finally {
      follower.process.kill('SIGKILL');
    }
    assert.equal((await follower.ended).stderr, 'ferry: q1 was destroyed on b: no more console\n');
    await waitUntil(() => !alive(qemuPid), 10_000, 'QEMU gone');
    assert.deepEqual(processesMentioning(dir), []);
    assert.deepEqual(guestFiles(cluster, 'b', 'q1'), []);
    assert.deepEqual(guestFiles(cluster, 'a', 'q1'), []);
  });

  it('refuses bad flags with exit 2 and one line, and creates nothing', function () {
    const cases: [string[], RegExp][] = [
      [['vm', 'create', 'bad1', '--host', 'a', '--memory', '64MiB', '--kernel', '/boot/vmlinuz'], /--kernel is for --driver qemu guests/],
      [
        ['vm', 'create', 'bad2', '--host', 'a', '--driver', 'qemu', '--memory', '64MiB', '--workload', 'kv:get=10,set=1'],
        /--workload is for synthetic guests/,
      ],
      [
        ['vm', 'create', 'bad3', '--host', 'a', '--driver', 'qemu', '--memory', '64MiB', '--kernel', '/nonexistent/vmlinuz'],
        /--kernel \/nonexistent\/vmlinuz: no such file on this host \[ERR_FERRY_NOT_FOUND\]/,
      ],
      [
        ['vm', 'create', 'bad4', '--host', 'a', '--driver', 'qemu', '--memory', '64MiB', '--initrd', '/boot/initrd.img'],
        /--initrd needs --kernel/,
      ],
    ];
    for (const [args, message] of cases) {
      const r = run(args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stdout, '');
      for (const host of ['a', 'b']) assert.deepEqual(guestFiles(cluster, host, args[2]!), [], `${args[2]} on ${host}`);
    }
    assert.deepEqual(jsonLines(run(['vm', 'list', '--json']).stdout), []);
  });

  it('probe shows the QEMU version and accelerator in one narrow column, and --json the full availability', function () {
    const r = run(['probe']);
    assert.equal(r.status, 0, r.stderr);
    const [header, ...rows] = r.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(/\s{2,}/));
    assert.equal(header!.at(-1), 'QEMU');
    for (const row of rows) assert.match(row.at(-1)!, /^\d+\.\d+\.\d+\/(kvm|tcg)$/);
    const hosts = jsonLines(run(['probe', '--json']).stdout).filter((l) => l.type === 'host');
    for (const h of hosts) {
      assert.equal(h.qemu, true);
      assert.equal(h.drivers.qemu.available, true);
      assert.match(h.drivers.qemu.detail, /^QEMU \d+\.\d+\.\d+, (KVM|TCG)/);
      assert.match(h.drivers.qemu.version, /^\d+\.\d+\.\d+$/);
      assert.deepEqual(h.drivers.synthetic, { available: true, detail: 'built in' });
    }
  });
});

describe('e2e: a host without QEMU', function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  const run = (args: string[]): CliResult => ferry(args, cluster.env);

  before(async function () {
    cluster = TestCluster.create('ferry-no-qemu-');
    await cluster.addHost('n');
    await withEnv({ FERRY_QEMU: '/nonexistent/qemu-system-x86_64' }, () => cluster.startAgent('n'));
  });
  after(() => stopAll(cluster));

  it('refuses a --driver qemu guest with exit 1 and a message that says why; no record, no directory', function () {
    const r = run(['vm', 'create', 'q1', '--host', 'n', '--driver', 'qemu', '--memory', '64MiB']);
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      'ferry: host n cannot run qemu guests: FERRY_QEMU=/nonexistent/qemu-system-x86_64 is not an executable file; guest "q1" was not created [ERR_FERRY_REFUSED]\n',
    );
    assert.deepEqual(guestFiles(cluster, 'n', 'q1'), []);
    assert.deepEqual(jsonLines(run(['vm', 'list', '--json']).stdout), []);
  });

  it('probe shows - in the QEMU column, and --json says why', function () {
    const r = run(['probe']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      r.stdout
        .trim()
        .split('\n')[1]!
        .split(/\s{2,}/)
        .at(-1),
      '-',
    );
    const [host] = jsonLines(run(['probe', '--json']).stdout).filter((l) => l.type === 'host');
    assert.equal(host!.qemu, false);
    assert.deepEqual(host!.drivers.qemu, {
      available: false,
      detail: 'FERRY_QEMU=/nonexistent/qemu-system-x86_64 is not an executable file',
    });
  });

  it('vm console of a synthetic guest says it has no serial console, exit 2', function () {
    ferryOk(['vm', 'create', 's1', '--host', 'n', '--memory', '16MiB'], cluster.env);
    const r = run(['vm', 'console', 's1']);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      'ferry: guest s1 is a synthetic guest, which has no serial console: only QEMU guests have one [ERR_FERRY_INPUT]\n',
    );
    const missing = run(['vm', 'console', 'nope']);
    assert.equal(missing.status, 2, missing.stderr);
    assert.match(missing.stderr, /no guest "nope" on any host/);
  });
});
