/**
 * Admission, up front and changing nothing: a guest larger than a host's free memory less its
 * reserve is refused by `vm create` and as a migration or evacuation target (by the CLI, and by the
 * agent itself when asked directly); `host init` refuses addresses another host already uses.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ferry, ferryOk } from '../support/cli.js';
import { freePort, TestCluster } from '../support/cluster.js';
import { jsonLines, placements } from '../support/json-output.js';
import { loadCluster } from '../../src/coordinator/cluster.js';
import { connectHost } from '../../src/coordinator/connect.js';

const GiB = 2 ** 30;

/** Exit `status`, one line on stderr matching `message`, nothing on stdout. */
function refused(args: string[], env: NodeJS.ProcessEnv, status: number, message: RegExp) {
  const r = ferry(args, env);
  assert.equal(r.status, status, `ferry ${args.join(' ')}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, message);
  assert.equal(r.stdout, '');
}

describe('e2e: admission', function () {
  let cluster: TestCluster;
  let initial: string[];
  const list = () => placements(jsonLines(ferryOk(['vm', 'list', '--json'], cluster.env).stdout));

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a');
    // b keeps all the memory a machine could have for itself: no guest fits there.
    ferryOk(
      [
        'host',
        'init',
        'b',
        '--dir',
        cluster.hostDir('b'),
        '--control',
        `127.0.0.1:${await freePort()}`,
        '--network',
        `127.0.0.1:${await freePort()}`,
        '--memory-reserve',
        '1TiB',
      ],
      cluster.env,
    );
    await Promise.all([cluster.startAgent('a'), cluster.startAgent('b')]);
    ferryOk(['vm', 'create', 'g', '--host', 'a', '--memory', '16MiB'], cluster.env);
    initial = list();
  });
  after(async function () {
    await cluster?.stop();
  });

  afterEach(function () {
    assert.deepEqual(list(), initial, 'admission changed what runs where');
  });

  it('vm create refuses a guest larger than free memory less the reserve, before anything is made', function () {
    const probe = jsonLines(ferryOk(['probe', '--json', 'a'], cluster.env).stdout).find((l) => l.type === 'host')!;
    assert.equal(probe.freeMemoryBytes > GiB, true);
    const size = `${Math.ceil(probe.freeMemoryBytes / GiB) + 1}GiB`;
    refused(
      ['vm', 'create', 'huge', '--host', 'a', '--memory', size],
      cluster.env,
      1,
      new RegExp(
        `host a has [\\d.]+ GiB free and keeps 1\\.00 GiB of it for itself \\(host init --memory-reserve\\), which leaves [\\d.]+ GiB for guests; guest "huge" needs ${size.replace('GiB', '')}\\.0 GiB \\(--memory\\) and was not created \\[ERR_FERRY_REFUSED\\]`,
      ),
    );
    refused(
      ['vm', 'create', 'small', '--host', 'b', '--memory', '16MiB'],
      cluster.env,
      1,
      /host b has .* keeps 1\.00 TiB of it for itself .* which leaves 0 B for guests; guest "small" needs 16\.0 MiB \(--memory\) and was not created \[ERR_FERRY_REFUSED\]/,
    );
    const r = ferry(['vm', 'create', 'small', '--host', 'b', '--memory', '16MiB', '--json'], cluster.env);
    assert.equal(r.status, 1);
    assert.deepEqual(jsonLines(r.stdout).at(-1)!.error.code, 'ERR_FERRY_REFUSED');
    for (const g of ['huge', 'small']) {
      for (const h of ['a', 'b']) assert.equal(existsSync(path.join(cluster.hostDir(h), 'guests', `${g}.json`)), false);
    }
  });

  it('the agent applies the same rule to a create request that skips the CLI', async function () {
    const c = await loadCluster(cluster.file);
    const client = await connectHost(c, 'b');
    try {
      const config = {
        name: 'direct',
        driver: 'synthetic',
        memoryBytes: 16 * 2 ** 20,
        diskBytes: 0,
        workload: { kind: 'idle' },
        nic: 'virtio',
        encryptedMigration: 'opportunistic',
      } as const;
      await assert.rejects(client.call('guest.create', { config }), {
        code: 'ERR_FERRY_REFUSED',
        message: /host b has .* leaves 0 B for guests; guest "direct" needs 16\.0 MiB \(--memory\) and was not created/,
      });
      assert.equal((await client.call('capabilities', {})).memoryReserveBytes, 2 ** 40);
    } finally {
      client.close();
    }
  });

  it('migrate refuses a destination without room, before anything moves', function () {
    refused(
      ['migrate', 'g', '--to', 'b'],
      cluster.env,
      1,
      /host b has .* which leaves 0 B for guests; guest "g" needs 16\.0 MiB; nothing was moved \[ERR_FERRY_REFUSED\]/,
    );
    const r = ferry(['migrate', 'g', '--to', 'b', '--json'], cluster.env);
    assert.equal(r.status, 1);
    const result = jsonLines(r.stdout).at(-1)!;
    assert.deepEqual([result.ok, result.from, result.bytesSent, result.error.code], [false, 'a', 0, 'ERR_FERRY_REFUSED']);
  });

  it('evacuate finds no place on a host without room, in the plan and when it runs', function () {
    const dry = ferry(['evacuate', 'a', '--to', 'b', '--dry-run', '--json'], cluster.env);
    assert.equal(dry.status, 1, dry.stderr);
    const plan = jsonLines(dry.stdout).find((l) => l.type === 'plan')!;
    assert.equal(plan.to, null);
    assert.match(plan.reason, /b: 0 B of memory left for guests, it needs 16\.0 MiB/);
    const run = ferry(['evacuate', 'a', '--to', 'b'], cluster.env);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stdout + run.stderr, /b: 0 B of memory left for guests, it needs 16\.0 MiB/);
  });

  describe('host init refuses addresses another host uses', function () {
    let a: { control: string; networks: { listen: string }[] };
    let file: string;

    before(async function () {
      const c = await loadCluster(cluster.file);
      a = c.hosts.get('a')!;
      file = readFileSync(cluster.file, 'utf8');
    });
    afterEach(function () {
      assert.equal(readFileSync(cluster.file, 'utf8'), file, 'the cluster file changed');
      assert.equal(existsSync(cluster.hostDir('c')), false, 'a state directory was made');
    });

    const init = async (control: string | null, network: string | null, extra: string[] = []) => [
      'host',
      'init',
      'c',
      '--dir',
      cluster.hostDir('c'),
      '--control',
      control ?? `127.0.0.1:${await freePort()}`,
      '--network',
      network ?? `127.0.0.1:${await freePort()}`,
      ...extra,
    ];

    it("another host's control or migration address, as --control, --network or --advertise", async function () {
      const inUse = (flag: string, address: string, what: string) =>
        new RegExp(
          `${flag} ${address.replace(/\./g, '\\.')} is already host a's ${what} in .*cluster\\.yaml: each host needs addresses of its own \\[ERR_FERRY_INPUT\\]`,
        );
      refused(await init(a.control, null), cluster.env, 2, inUse('--control', a.control, 'control address'));
      refused(await init(a.networks[0]!.listen, null), cluster.env, 2, inUse('--control', a.networks[0]!.listen, 'migration network'));
      refused(await init(null, a.networks[0]!.listen), cluster.env, 2, inUse('--network', a.networks[0]!.listen, 'migration network'));
      refused(
        await init(null, `127.0.0.1:${await freePort()},${a.control}`),
        cluster.env,
        2,
        inUse('--network', a.control, 'control address'),
      );
      refused(
        await init(null, `0.0.0.0:${await freePort()}`, ['--advertise', a.networks[0]!.listen]),
        cluster.env,
        2,
        inUse('--advertise', a.networks[0]!.listen, 'migration network'),
      );
    });

    it('one address given twice to the same host, and a reserve that is no size', async function () {
      const port = `127.0.0.1:${await freePort()}`;
      refused(
        await init(port, port),
        cluster.env,
        2,
        new RegExp(`--network ${port} is also given to --control: each address once \\[ERR_FERRY_USAGE\\]`),
      );
      refused(
        await init(null, null, ['--memory-reserve', 'lots']),
        cluster.env,
        2,
        /--memory-reserve: "lots" is not a number with a unit \[ERR_FERRY_USAGE\]/,
      );
    });

    it('a wildcard listen address on another machine is no conflict', async function () {
      const dir = path.join(cluster.root, 'host-w1');
      const port = await freePort();
      const args = async (name: string, d: string) => [
        'host',
        'init',
        name,
        '--dir',
        d,
        '--control',
        `127.0.0.1:${await freePort()}`,
        '--network',
        `0.0.0.0:${port}`,
        '--advertise',
        `198.51.100.${name === 'w1' ? 1 : 2}:${port}`,
      ];
      ferryOk(await args('w1', dir), cluster.env);
      ferryOk(await args('w2', path.join(cluster.root, 'host-w2')), cluster.env);
      // Put the file back as the other cases expect it.
      writeFileSync(cluster.file, file);
    });
  });
});
