/** The state directory: 0700/0600, atomic writes that leave nothing behind, damaged files named, one commit decision. */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createFileAtomic, writeFileAtomic } from '../../src/common/atomic-file.js';
import { StateDir, cryptoThreadsPerMigration, type HostConfig } from '../../src/agent/state.js';
import type { GuestConfig } from '../../src/guest/types.js';

const config: HostConfig = {
  name: 'a',
  control: '127.0.0.1:7000',
  networks: [{ listen: '127.0.0.1:7100', advertise: '127.0.0.1:7100' }],
  hasSriov: false,
  limits: { outgoing: 2, incoming: 2 },
};
const guest: GuestConfig = {
  name: 'g1',
  driver: 'synthetic',
  memoryBytes: 1 << 20,
  diskBytes: 0,
  workload: { kind: 'idle' },
  nic: 'virtio',
  encryptedMigration: 'opportunistic',
};

function modes(dir: string): string[] {
  const bad: string[] = [];
  for (const f of readdirSync(dir, { recursive: true }) as string[]) {
    const st = statSync(path.join(dir, f));
    if ((st.mode & 0o777) !== (st.isDirectory() ? 0o700 : 0o600)) bad.push(`${f} ${(st.mode & 0o777).toString(8)}`);
  }
  return bad;
}

describe('agent: state directory', function () {
  let root: string;
  beforeEach(function () {
    root = mkdtempSync(path.join(os.tmpdir(), 'ferry-state-'));
  });
  afterEach(function () {
    rmSync(root, { recursive: true, force: true });
  });

  it('keeps every file 0600 and every directory 0700, with no temporary files left', async function () {
    const dir = path.join(root, 'h');
    const state = await StateDir.create(dir, config);
    await state.writeGuest({ config: guest, createdAt: new Date().toISOString() });
    await state.writeGuest({ config: { ...guest, encryptedMigration: 'required' }, createdAt: new Date().toISOString() });
    await state.decide('m-1', 'g1', 'committed');
    await state.recordHandoff('m-2', 'g1', 'b');
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.deepEqual(modes(dir), []);
    assert.deepEqual(readdirSync(path.join(dir, 'guests')), ['g1.json']);
    assert.equal((await (await StateDir.open(dir)).readGuest('g1')).config.encryptedMigration, 'required');
  });

  it('replaces a file whole even under a permissive umask', async function () {
    const old = process.umask(0);
    try {
      const f = path.join(root, 'x.json');
      await writeFileAtomic(f, 'one');
      await writeFileAtomic(f, 'two');
      assert.equal(statSync(f).mode & 0o777, 0o600);
      assert.deepEqual(readdirSync(root), ['x.json']);
    } finally {
      process.umask(old);
    }
  });

  it('lets exactly one of two racing decisions stand, and a later one sees it', async function () {
    const state = await StateDir.create(path.join(root, 'h'), config);
    for (let i = 0; i < 20; i++) {
      const id = `m-race-${i}`;
      const [a, b] = await Promise.all([state.decide(id, 'g1', 'committed'), state.decide(id, 'g1', 'not-committed')]);
      assert.equal(a, b, 'both callers see the same decision');
      assert.equal(await state.decision(id), a);
      assert.equal(await state.decide(id, 'g1', a === 'committed' ? 'not-committed' : 'committed'), a);
    }
    assert.equal(await state.decision('m-unknown'), null);
    assert.equal(await createFileAtomic(path.join(root, 'once'), 'a'), true);
    assert.equal(await createFileAtomic(path.join(root, 'once'), 'b'), false);
  });

  it('loads a host.json from before the crypto-thread budget, and checks one that has it', async function () {
    const dir = path.join(root, 'h');
    await StateDir.create(dir, config);
    // Exactly what host init wrote before limits.cryptoThreads existed.
    const old = {
      name: 'a',
      control: '127.0.0.1:7000',
      networks: [{ listen: '127.0.0.1:7100', advertise: '127.0.0.1:7100' }],
      hasSriov: false,
      limits: { outgoing: 2, incoming: 2 },
    };
    writeFileSync(path.join(dir, 'host.json'), JSON.stringify(old));
    const opened = await StateDir.open(dir);
    assert.deepEqual(opened.config.limits, { outgoing: 2, incoming: 2 });
    assert.equal(cryptoThreadsPerMigration(opened.config.limits), undefined);
    writeFileSync(path.join(dir, 'host.json'), JSON.stringify({ ...old, limits: { outgoing: 2, incoming: 1, cryptoThreads: 7 } }));
    assert.deepEqual((await StateDir.open(dir)).config.limits, { outgoing: 2, incoming: 1, cryptoThreads: 7 });
    for (const bad of [0, -2, 1.5, '4', 1025]) {
      writeFileSync(path.join(dir, 'host.json'), JSON.stringify({ ...old, limits: { outgoing: 2, incoming: 2, cryptoThreads: bad } }));
      await assert.rejects(StateDir.open(dir), { code: 'ERR_FERRY_INPUT', message: /host\.json.*limits\.cryptoThreads/ }, String(bad));
    }
  });

  it('shares the crypto-thread budget equally among the migration slots, at least 1 each', function () {
    const share = (outgoing: number, incoming: number, cryptoThreads?: number) =>
      cryptoThreadsPerMigration({ outgoing, incoming, ...(cryptoThreads === undefined ? {} : { cryptoThreads }) });
    assert.equal(share(2, 2), undefined);
    assert.equal(share(2, 2, 8), 2);
    assert.equal(share(2, 2, 11), 2); // never more than the budget: 4 x 2 <= 11
    assert.equal(share(1, 1, 5), 2);
    assert.equal(share(1, 1, 1), 1); // below the slots: still one each (docs/operations.md)
    assert.equal(share(3, 2, 1024), 204);
  });

  it('names a damaged file instead of using it', async function () {
    const dir = path.join(root, 'h');
    const state = await StateDir.create(dir, config);
    writeFileSync(path.join(dir, 'guests', 'g2.json'), '{"config": {"name": "g2"');
    await assert.rejects(state.readGuest('g2'), { code: 'ERR_FERRY_INPUT', message: /g2\.json is not valid JSON/ });
    writeFileSync(path.join(dir, 'host.json'), JSON.stringify({ ...config, limits: { outgoing: 0, incoming: 2 } }));
    await assert.rejects(StateDir.open(dir), { code: 'ERR_FERRY_INPUT', message: /host\.json.*limits\.outgoing: must be at least 1/ });
    await assert.rejects(StateDir.open(path.join(root, 'none')), { code: 'ERR_FERRY_NOT_FOUND', message: /host init/ });
    await assert.rejects(state.decide('../escape', 'g1', 'committed'), { code: 'ERR_FERRY_INPUT' });
  });
});
