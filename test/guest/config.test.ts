/**
 * Guest configs as they arrive over the control API and from the agent's records: complete and
 * checked, defaults only for fields left out, and nothing unknown let through.
 */
import assert from 'node:assert/strict';
import { FerryError } from '../../src/errors.js';
import { checkGuestConfig } from '../../src/guest/config.js';
import { parseWorkload } from '../../src/guest/index.js';

const base = {
  name: 'web-1',
  driver: 'synthetic',
  memoryBytes: 16 * 2 ** 20,
  workload: { kind: 'kv', getsPerSecond: 10, setsPerSecond: 5 },
};
const refused = (v: unknown, message: RegExp) =>
  assert.throws(
    () => checkGuestConfig(v),
    (e: FerryError) => e.code === 'ERR_FERRY_INPUT' && message.test(e.message),
    JSON.stringify(v),
  );

describe('guest config checks', () => {
  it('fills in the defaults of fields left out, and keeps what was given', () => {
    assert.deepEqual(checkGuestConfig(base), { ...base, diskBytes: 0, nic: 'virtio', encryptedMigration: 'opportunistic' });
    const full = { ...base, diskBytes: 2 ** 20, nic: 'sriov', encryptedMigration: 'required' };
    assert.deepEqual(checkGuestConfig(full), full);
  });

  it('refuses a field it does not know, so a misspelt setting never falls back to its default', () => {
    refused({ ...base, encryptedMigraton: 'required' }, /guest config\.encryptedMigraton: unknown field/);
    refused({ ...base, workload: { ...base.workload, set: 5 } }, /workload\.set: unknown field/);
    refused({ ...base, workload: { kind: 'idle', bytesPerSecond: 1 } }, /workload\.bytesPerSecond: unknown field/);
  });

  it('takes null for no field: absent is the only way to ask for a default', () => {
    refused({ ...base, diskBytes: null }, /diskBytes: must be a whole number/);
    refused({ ...base, nic: null }, /nic: must be one of virtio, sriov/);
    refused({ ...base, encryptedMigration: null }, /encryptedMigration: must be one of/);
  });

  it('refuses arrays where objects belong', () => {
    refused([], /guest config: must be an object/);
    refused({ ...base, workload: [] }, /workload: must be an object/);
  });

  it('parses workloads as operators write them', () => {
    assert.deepEqual(parseWorkload('idle'), { kind: 'idle' });
    assert.deepEqual(parseWorkload('kv:get=150000,set=50000'), { kind: 'kv', getsPerSecond: 150000, setsPerSecond: 50000 });
    assert.deepEqual(parseWorkload('dirty:200MB'), { kind: 'dirty', bytesPerSecond: 200e6 });
    assert.deepEqual(parseWorkload('dirty:4MB,fill'), { kind: 'dirty', bytesPerSecond: 4e6, fill: true });
    for (const bad of ['busy', 'kv:get=1', 'dirty:', 'dirty:fast', 'kv:get=-1,set=2', 'dirty:4MB,full', 'dirty:,fill']) {
      assert.throws(
        () => parseWorkload(bad),
        (e: FerryError) => e.code === 'ERR_FERRY_INPUT',
        bad,
      );
    }
  });
});
