/**
 * `ferry evacuate` end to end: --dry-run changes nothing; six guests move with --concurrency 2 and
 * the events show never more than two running at once, the rest queued; a required guest only
 * goes to a host that encrypts.
 */
import assert from 'node:assert/strict';
import { ferry, ferryOk } from '../support/cli.js';
import { TestCluster } from '../support/cluster.js';
import { jsonLines, placements } from '../support/json-output.js';

describe('e2e: ferry evacuate', function () {
  let cluster: TestCluster;
  const guests = ['e0', 'e1', 'e2', 'e3', 'e4', 'e5'];

  const list = () => jsonLines(ferryOk(['vm', 'list', '--json'], cluster.env).stdout);

  before(async function () {
    cluster = TestCluster.create();
    await cluster.addHost('a', { maxOutgoing: 4 });
    await cluster.addHost('b', { maxIncoming: 4 });
    await cluster.addHost('c', { maxIncoming: 4 });
    await Promise.all([cluster.startAgent('a'), cluster.startAgent('b'), cluster.startAgent('c', ['--no-encryption'])]);
    for (const g of guests) {
      const extra = g === 'e0' ? ['--encrypted-migration', 'required'] : [];
      ferryOk(['vm', 'create', g, '--host', 'a', '--memory', '64MiB', '--workload', 'kv:get=200,set=50', ...extra], cluster.env);
    }
  });
  after(async function () {
    await cluster?.stop();
  });

  it('--dry-run prints the plan and changes nothing', function () {
    const before = list();
    const r = ferry(['evacuate', 'a', '--dry-run', '--json'], cluster.env);
    assert.equal(r.status, 0, r.stderr);
    const lines = jsonLines(r.stdout);
    const plan = lines.filter((l) => l.type === 'plan');
    assert.deepEqual(plan.map((p) => p.vm).sort(), guests);
    const e0 = plan.find((p) => p.vm === 'e0')!;
    assert.equal(e0.to, 'b', 'the required guest only goes to the host that encrypts');
    assert.equal(e0.mode, 'encrypted');
    for (const p of plan.filter((x) => x.to === 'c')) assert.equal(p.mode, 'plain');
    assert.deepEqual(lines.pop(), { type: 'result', ok: true, host: 'a', dryRun: true, placed: 6, unplaced: 0 });
    assert.deepEqual(placements(list()), placements(before));
    const human = ferry(['evacuate', 'a', '--dry-run'], cluster.env);
    assert.equal(human.status, 0);
    assert.match(human.stdout, /^GUEST\s+TO\s+MODE/);
  });

  it('moves six guests, never more than two at once, the rest shown as queued', function () {
    const r = ferry(['evacuate', 'a', '--concurrency', '2', '--json'], cluster.env);
    assert.equal(
      r.status,
      0,
      `${r.stderr}\n${r.stdout
        .split('\n')
        .filter((l) => /"ok":false|"error"/.test(l))
        .join('\n')}`,
    );
    const lines = jsonLines(r.stdout);
    // The coordinator's view: begin .. end of each migration.
    let running = 0;
    let peak = 0;
    // The agents' view: the source's `started` (slot taken, data flowing) .. its `committed`.
    let flowing = 0;
    let flowingPeak = 0;
    for (const e of lines) {
      if (e.type === 'begin') peak = Math.max(peak, ++running);
      if (e.type === 'end') running--;
      if (e.type === 'started' && e.side === 'source') flowingPeak = Math.max(flowingPeak, ++flowing);
      if ((e.type === 'committed' || e.type === 'aborted') && e.side === 'source') flowing--;
    }
    assert.equal(peak, 2, 'two at once');
    assert.ok(flowingPeak <= 2, `agents ran ${flowingPeak} at once`);
    const queued = lines.filter((e) => e.type === 'queued' && e.side === 'coordinator').map((e) => e.vm);
    assert.equal(queued.length, 4, 'all but the first two wait their turn');
    const result = lines.pop()!;
    assert.equal(result.ok, true);
    assert.equal(result.moved, 6);
    assert.equal(result.failed, 0);
    const after = list();
    assert.deepEqual(
      after.filter((g) => g.host === 'a'),
      [],
    );
    assert.equal(after.find((g) => g.name === 'e0')!.host, 'b');
    assert.ok(after.every((g) => g.state === 'running'));
  });

  it('exits 1 with a table when a guest has nowhere to go, and it stays', function () {
    ferryOk(['vm', 'create', 'big', '--host', 'b', '--memory', '64MiB', '--encrypted-migration', 'required'], cluster.env);
    const r = ferry(['evacuate', 'b', '--to', 'c'], cluster.env);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stdout, /big\s+-\s+stays on b/);
    assert.match(r.stderr, /could not be moved off b; they still run there \[ERR_FERRY_ABORTED\]/);
    assert.equal(list().find((g) => g.name === 'big')!.host, 'b');
  });
});
