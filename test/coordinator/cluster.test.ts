/** The cluster file: parsing, line-numbered errors, where it comes from, and atomic host additions. */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { FerryError } from '../../src/errors.js';
import { HOST_NAME } from '../../src/common/names.js';
import { addClusterHost, clusterPath, initialClusterText, loadCluster, parseCluster } from '../../src/coordinator/cluster.js';
import { addressProblem } from '../../src/common/address.js';

const FILE = '/etc/ferry/cluster.yaml';

const good = `# test
ca:
  cert: ca.crt
  key: /secure/ca.key
coordinator:
  cert: coordinator.crt
  key: coordinator.key
hosts:
  a:
    control: 127.0.0.1:7001
    networks:
      - listen: 10.0.0.1:7101
        advertise: 203.0.113.7:7101
      - 127.0.0.1:7102
  b-2:
    control: host-b.example:7002
    networks: ['[::1]:7103']
`;

function problem(text: string): string {
  try {
    parseCluster(FILE, text);
  } catch (err) {
    assert.equal((err as { code?: string }).code, 'ERR_FERRY_INPUT');
    return (err as Error).message;
  }
  assert.fail('the cluster file was accepted');
}

describe('coordinator: cluster file', function () {
  it('reads hosts, networks in order, and paths relative to the file', function () {
    const c = parseCluster(FILE, good);
    assert.equal(c.caCert, '/etc/ferry/ca.crt');
    assert.equal(c.caKey, '/secure/ca.key');
    assert.equal(c.coordinatorKey, '/etc/ferry/coordinator.key');
    assert.deepEqual([...c.hosts.keys()], ['a', 'b-2']);
    assert.deepEqual(c.hosts.get('a')!.networks, [
      { listen: '10.0.0.1:7101', advertise: '203.0.113.7:7101' },
      { listen: '127.0.0.1:7102', advertise: '127.0.0.1:7102' },
    ]);
    assert.equal(c.hosts.get('b-2')!.networks[0]!.advertise, '[::1]:7103');
  });

  it('names the file, line and column, and what is wrong', function () {
    assert.equal(
      problem(good.replace('control: 127.0.0.1:7001', 'control: 127.0.0.1')),
      `${FILE}:10:14: hosts.a.control: "127.0.0.1" is not HOST:PORT (IPv6 in brackets: [::1]:7000)`,
    );
    assert.match(
      problem(good.replace('      - 127.0.0.1:7102', '      - 127.0.0.1:99999')),
      /:14:9: hosts\.a\.networks\[1\]: port 99999 is out of range/,
    );
    assert.match(problem(good.replace('  cert: ca.crt\n', '')), /:3:3: ca\.cert: is missing/);
    assert.match(
      problem(good.replace('    control: host-b', '    contrl: host-b')),
      /:16:5: hosts\.b-2\.contrl: unknown field \(known: control, networks\)/,
    );
    assert.match(problem(good.replace('  b-2:', '  B_2:')), /:15:3: hosts\.B_2: "B_2" is not a host name \(lower-case/);
    assert.match(problem(good.replace("networks: ['[::1]:7103']", 'networks: []')), /:17:15: hosts\.b-2\.networks: needs at least 1 item/);
    assert.match(problem(good.replace('hosts:\n', 'hosts: [\n')), new RegExp(`^${FILE}:\\d+:\\d+: not valid YAML`));
    assert.match(problem('- just\n- a list\n'), /:1:1: must be an object/);
    assert.match(problem(good + 'extra: 1\n'), /:18:1: extra: unknown field/);
    assert.match(problem(good.replace('  a:\n', '  a:\n    control: 127.0.0.1:1\n')), /not valid YAML.*[Mm]ap keys must be unique/);
  });

  it('takes any edit of a good file as a complete cluster, or refuses it with ERR_FERRY_INPUT naming the file (property)', function () {
    // Edits as a hand or a bad merge makes them: characters dropped, doubled or changed (YAML's
    // own among them), lines dropped, duplicated or swapped.
    type Edit = (text: string) => string;
    const charEdit: fc.Arbitrary<Edit> = fc
      .tuple(fc.nat(), fc.integer({ min: 0, max: 4 }), fc.constantFrom(...':-[]{}#\'"&*!|>%@` \t\nA9.,\\\u00e9\u0000'))
      .map(([n, len, ch]) => (t) => {
        const at = n % (t.length + 1);
        return t.slice(0, at) + ch + t.slice(at + len);
      });
    const lineEdit: fc.Arbitrary<Edit> = fc
      .tuple(fc.nat(), fc.nat(), fc.constantFrom('drop', 'double', 'swap'))
      .map(([a, b, op]) => (t) => {
        const l = t.split('\n');
        const [i, j] = [a % l.length, b % l.length];
        if (op === 'drop') l.splice(i, 1);
        else if (op === 'double') l.splice(i, 0, l[i]!);
        else [l[i], l[j]] = [l[j]!, l[i]!];
        return l.join('\n');
      });
    fc.assert(
      fc.property(
        fc.array(fc.oneof(charEdit, lineEdit), { minLength: 1, maxLength: 3 }).map((edits) => edits.reduce((t, e) => e(t), good)),
        (text) => {
          let c;
          try {
            c = parseCluster(FILE, text);
          } catch (err) {
            assert.ok(err instanceof FerryError, `not a FerryError: ${(err as Error)?.stack ?? String(err)}`);
            assert.equal(err.code, 'ERR_FERRY_INPUT');
            assert.ok(err.message.startsWith(`${FILE}:`), err.message);
            return;
          }
          // Taken: then it is whole and every field holds what its check promises.
          for (const f of [c.caCert, c.coordinatorCert, c.coordinatorKey]) assert.ok(path.isAbsolute(f), f);
          assert.ok(c.caKey === null || path.isAbsolute(c.caKey));
          assert.ok(c.hosts.size > 0);
          for (const [name, h] of c.hosts) {
            assert.match(name, HOST_NAME);
            assert.equal(h.name, name);
            assert.equal(addressProblem(h.control), null, h.control);
            assert.ok(h.networks.length > 0);
            for (const n of h.networks) assert.equal(addressProblem(n.listen) ?? addressProblem(n.advertise), null, JSON.stringify(n));
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('comes from --cluster, else FERRY_CLUSTER, else a usage error', function () {
    assert.equal(clusterPath('x.yaml', { FERRY_CLUSTER: '/y.yaml' }), path.resolve('x.yaml'));
    assert.equal(clusterPath(undefined, { FERRY_CLUSTER: '/y.yaml' }), '/y.yaml');
    assert.throws(() => clusterPath(undefined, {}), { code: 'ERR_FERRY_USAGE', message: /--cluster FILE or set FERRY_CLUSTER/ });
  });

  describe('adding hosts', function () {
    let dir: string;
    let file: string;
    beforeEach(function () {
      dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-cluster-'));
      file = path.join(dir, 'cluster.yaml');
      writeFileSync(file, initialClusterText());
    });
    afterEach(function () {
      rmSync(dir, { recursive: true, force: true });
    });

    it('keeps comments, writes atomically, leaves no temporary or lock file', async function () {
      await addClusterHost(file, { name: 'a', control: '127.0.0.1:1', networks: [{ listen: '127.0.0.1:2', advertise: '10.9.9.9:2' }] });
      const text = readFileSync(file, 'utf8');
      assert.match(text, /^# ferry cluster file/);
      const c = await loadCluster(file);
      assert.deepEqual(c.hosts.get('a')!.networks, [{ listen: '127.0.0.1:2', advertise: '10.9.9.9:2' }]);
      assert.deepEqual(readdirSync(dir), ['cluster.yaml']);
    });

    it('loses no host when several are added at once, and refuses a duplicate name', async function () {
      const names = ['a', 'b', 'c', 'd', 'e', 'f'];
      await Promise.all(
        names.map((name, i) =>
          addClusterHost(file, {
            name,
            control: `127.0.0.1:${1000 + i}`,
            networks: [{ listen: `127.0.0.1:${2000 + i}`, advertise: `127.0.0.1:${2000 + i}` }],
          }),
        ),
      );
      assert.deepEqual([...(await loadCluster(file)).hosts.keys()].sort(), names);
      const before = readFileSync(file, 'utf8');
      await assert.rejects(
        addClusterHost(file, { name: 'c', control: '127.0.0.1:9', networks: [{ listen: '127.0.0.1:9', advertise: '127.0.0.1:9' }] }),
        { code: 'ERR_FERRY_INPUT', message: /already/ },
      );
      assert.equal(readFileSync(file, 'utf8'), before);
    });

    it('says which file is missing', async function () {
      await assert.rejects(loadCluster(path.join(dir, 'nope.yaml')), { code: 'ERR_FERRY_NOT_FOUND', message: /nope\.yaml/ });
    });
  });
});
