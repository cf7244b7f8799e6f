/**
 * The agent's per-role migration records: `migration.status` answers with the status fields only
 * (never a record's internals, such as the guest process's control connection), a migration id is
 * known once, and an outgoing migration's `ended` settles when it ends.
 */
import assert from 'node:assert/strict';
import { FerryError } from '../../src/errors.js';
import { cancelledError, MigrationRecords } from '../../src/agent/migration-records.js';

describe('agent: migration records', function () {
  it('answers status with exactly the status fields, for either role', function () {
    const records = new MigrationRecords();
    records.incoming('m-in', 'g1', 'b', null);
    const { migration } = records.outgoing('m-out', 'g2', { host: 'b', control: '127.0.0.1:7002' }, null);
    migration.cancelled = cancelledError(false);
    assert.ok(migration.cancelled instanceof FerryError);
    const fields = ['migrationId', 'role', 'guest', 'phase', 'position', 'lastEvent', 'result'];
    assert.deepEqual(Object.keys(records.status('m-in')), fields);
    assert.deepEqual(Object.keys(records.status('m-out')), fields);
    assert.deepEqual(records.status('m-out'), {
      migrationId: 'm-out',
      role: 'source',
      guest: 'g2',
      phase: 'queued',
      position: null,
      lastEvent: null,
      result: null,
    });
    assert.equal(records.status('m-in').role, 'destination');
    assert.throws(() => records.status('m-none'), { code: 'ERR_FERRY_NOT_FOUND' });
  });

  it('refuses a migration id it already knows, whatever the role', function () {
    const records = new MigrationRecords();
    records.incoming('m-1', 'g1', 'b', null);
    assert.throws(() => records.outgoing('m-1', 'g1', { host: 'b', control: '127.0.0.1:7002' }, null), { code: 'ERR_FERRY_INPUT' });
    assert.throws(() => records.incoming('m-1', 'g2', 'b', null), { code: 'ERR_FERRY_INPUT' });
    assert.equal(records.status('m-1').guest, 'g1', 'the first record stands');
  });

  it("settles an outgoing migration's `ended` when it ends, and lists a guest's outgoing migrations only", async function () {
    const records = new MigrationRecords();
    records.incoming('m-in', 'g1', 'b', null);
    const { migration, end } = records.outgoing('m-out', 'g1', { host: 'b', control: '127.0.0.1:7002' }, null);
    assert.deepEqual(
      records.outgoingOf('g1').map((m) => m.migrationId),
      ['m-out'],
    );
    const ended = migration.ended;
    assert.ok(ended);
    let settled = false;
    void ended.then(() => (settled = true));
    await Promise.resolve();
    assert.equal(settled, false);
    end();
    await ended;
    assert.equal(migration.ended, null, 'an ended migration has nothing left to cancel');
  });
});
