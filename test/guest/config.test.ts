/**
 * Guest configs as they arrive over the control API and from the agent's records: complete and
 * checked, defaults only for fields left out, and nothing unknown let through.
 */
import assert from 'node:assert/strict';
import { FerryError } from '../../src/errors.js';
import { checkGuestConfig } from '../../src/guest/config.js';

const base = { name: 'web-1', driver: 'synthetic', memoryBytes: 16 * 2 ** 20, workload: { kind: 'kv', getsPerSecond: 10, setsPerSecond: 5 } };
const refused = (v: unknown, message: RegExp) =>
  assert.throws(() => checkGuestConfig(v), (e: FerryError) => e.code === 'ERR_FERRY_INPUT' && message.test(e.message), JSON.stringify(v));

describe('guest config checks', () => {
  it('fills in the defaults of fields left out, and keeps what was given', () => {
    assert.deepEqual(checkGuestConfig(base), { ...base, diskBytes: 0, nic: 'virtio', encryptedMigration: 'opportunistic' });
    const full = { ...base, diskBytes: 2 ** 20, nic: 'sriov', encryptedMigration: 'required' };
    assert.deepEqual(checkGuestConfig(full), full);
  });

  it('refuses a field it does not know, so a misspelt setting never falls back to its default', () => {
    refused({ ...base, encryptedMigraton: 'required' }, /guest config: unknown field "encryptedMigraton"/);
    refused({ ...base, workload: { ...base.workload, set: 5 } }, /workload kv: unknown field "set"/);
    refused({ ...base, workload: { kind: 'idle', bytesPerSecond: 1 } }, /workload idle: unknown field "bytesPerSecond"/);
  });

  it('takes null for no field: absent is the only way to ask for a default', () => {
    refused({ ...base, diskBytes: null }, /diskBytes must be an integer/);
    refused({ ...base, nic: null }, /nic must be virtio or sriov/);
    refused({ ...base, encryptedMigration: null }, /encryptedMigration must be/);
  });

  it('refuses arrays where objects belong', () => {
    refused([], /guest config must be an object/);
    refused({ ...base, workload: [] }, /workload must be an object/);
  });
});
