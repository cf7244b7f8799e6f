import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { decideMode, moveSetting } from '../../src/coordinator/mode.js';
import { FerryError } from '../../src/errors.js';
import { MigrationKey, newMigrationId } from '../../src/coordinator/keys.js';
import { planEvacuation, type PlacementGuest } from '../../src/coordinator/placement.js';
import { stalePagesRisk } from '../../src/coordinator/preflight.js';
import type { GuestConfig } from '../../src/guest/types.js';
import type { Capabilities } from '../../src/control/protocol.js';

const GiB = 2 ** 30;
const a = { name: 'a', encrypts: true };
const b = { name: 'b', encrypts: true };
const old = { name: 'old', encrypts: false };

describe('coordinator: mode decision', function () {
  it('encrypts whenever both hosts can, unless disabled', function () {
    assert.deepEqual(decideMode('opportunistic', a, b), { mode: 'encrypted' });
    assert.deepEqual(decideMode('required', a, b), { mode: 'encrypted' });
    assert.deepEqual(decideMode('disabled', a, b), { mode: 'plain' });
  });

  it('opportunistic goes plain with a warning naming the host that cannot encrypt', function () {
    const d = decideMode('opportunistic', a, old);
    assert.equal(d.mode, 'plain');
    assert.match(d.warning!, /old cannot encrypt/);
  });

  it('required refuses a host that cannot encrypt', function () {
    assert.throws(() => decideMode('required', old, b), { code: 'ERR_FERRY_REFUSED' });
  });

  it('refuses a setting that is not one of the three', function () {
    assert.throws(() => decideMode('sometimes' as never, a, b), { code: 'ERR_FERRY_INPUT' });
  });
});

describe('coordinator: the QEMU 7.2 stale-pages warning', function () {
  const qemu = (accel: 'kvm' | 'tcg') => ({ driver: 'qemu', accel }) as GuestConfig;
  const on = (version?: string): Pick<Capabilities, 'drivers'> => ({
    drivers: version ? { qemu: { available: true, detail: '', version } } : {},
  });

  it('warns of a TCG guest moved without --verify by a QEMU before 10, saying what avoids it', function () {
    const warning = stalePagesRisk(qemu('tcg'), on('7.2.22'), false);
    assert.match(warning!, /QEMU 7\.2\.22 under TCG can leave stale guest pages/);
    assert.match(warning!, /--verify catches that/);
  });

  it('says nothing with --verify, under KVM, from QEMU 10 on, for a synthetic guest, or when the version is unknown', function () {
    assert.equal(stalePagesRisk(qemu('tcg'), on('7.2.22'), true), null);
    assert.equal(stalePagesRisk(qemu('kvm'), on('7.2.22'), false), null);
    assert.equal(stalePagesRisk(qemu('tcg'), on('10.0.2'), false), null);
    assert.equal(stalePagesRisk({ driver: 'synthetic' } as GuestConfig, on('7.2.22'), false), null);
    assert.equal(stalePagesRisk(qemu('tcg'), on(), false), null);
  });
});

describe('coordinator: migration keys', function () {
  it('are fresh, never printed, and wiped to zero', function () {
    const k1 = MigrationKey.generate();
    const k2 = MigrationKey.generate();
    assert.equal(k1.key.length, 32);
    assert.equal(k1.nonce.length, 8);
    assert.notDeepEqual(k1.key, k2.key);
    const hex = k1.key.toString('hex');
    assert.ok(!JSON.stringify({ k1 }).includes(hex));
    assert.ok(!inspect(k1, { depth: 5 }).includes(hex));
    k1.wipe();
    assert.ok(k1.key.every((x) => x === 0) && k1.nonce.every((x) => x === 0));
    assert.ok(k1.isWiped);
  });

  it('gives unique, file-name-safe migration ids', function () {
    const ids = new Set(Array.from({ length: 1000 }, () => newMigrationId()));
    assert.equal(ids.size, 1000);
    for (const id of ids) assert.match(id, /^[A-Za-z0-9._-]{1,64}$/);
  });
});

describe('coordinator: evacuation placement', function () {
  const guests: PlacementGuest[] = [
    { name: 'small', memoryBytes: 1 * GiB, encryptedMigration: 'opportunistic', nic: 'virtio' },
    { name: 'big', memoryBytes: 6 * GiB, encryptedMigration: 'opportunistic', nic: 'sriov' },
    { name: 'secret', memoryBytes: 2 * GiB, encryptedMigration: 'required', nic: 'virtio' },
  ];

  it('places largest first on the host with most room, required guests only on hosts that encrypt', function () {
    const plan = planEvacuation(a, guests, [
      { name: 'b', encrypts: true, freeMemoryBytes: 8 * GiB, memoryReserveBytes: 0, hasSriov: false },
      { name: 'old', encrypts: false, freeMemoryBytes: 4 * GiB, memoryReserveBytes: 0, hasSriov: true },
    ]);
    const by = Object.fromEntries(plan.map((p) => [p.guest, p]));
    assert.equal(plan[0]!.guest, 'big');
    assert.equal(by.big!.to, 'b');
    assert.equal((by.big as { nicFallback: boolean }).nicFallback, true);
    assert.equal(by.secret!.to, 'b');
    assert.equal(by.small!.to, 'old');
    assert.equal((by.small as { mode: string }).mode, 'plain');
    assert.match((by.small as { warning: string }).warning, /old cannot encrypt/);
  });

  it('reports guests that fit nowhere, with the reasons, instead of overcommitting', function () {
    const plan = planEvacuation(a, guests, [
      { name: 'old', encrypts: false, freeMemoryBytes: 2 * GiB, memoryReserveBytes: 0, hasSriov: false },
    ]);
    const by = Object.fromEntries(plan.map((p) => [p.guest, p]));
    assert.equal(by.big!.to, null);
    assert.match((by.big as { reason: string }).reason, /old: 2\.00 GiB of memory left for guests, it needs 6\.00 GiB/);
    assert.equal(by.secret!.to, null);
    assert.match((by.secret as { reason: string }).reason, /cannot encrypt/);
    assert.equal(by.small!.to, 'old');
  });

  it("keeps each host's memory reserve (default 1 GiB) out of what it can give guests", function () {
    const six = [guests[1]!];
    const host = { name: 'b', encrypts: true, freeMemoryBytes: 7 * GiB, hasSriov: true };
    assert.equal(planEvacuation(a, six, [host])[0]!.to, 'b'); // 7 GiB less the default 1 GiB: room for 6
    const reserved = planEvacuation(a, six, [{ ...host, memoryReserveBytes: 1.5 * GiB }])[0] as { to: null; reason: string };
    assert.equal(reserved.to, null);
    assert.match(reserved.reason, /b: 5\.50 GiB of memory left for guests, it needs 6\.00 GiB/);
    assert.equal(planEvacuation(a, six, [{ ...host, freeMemoryBytes: 6.5 * GiB }])[0]!.to, null);
  });
});

describe('coordinator: --mode never weakens a guest', function () {
  it('takes a stricter or equal setting and refuses a weaker one, naming ferry vm set', function () {
    assert.equal(moveSetting('g', 'opportunistic', undefined), 'opportunistic');
    assert.equal(moveSetting('g', 'opportunistic', 'required'), 'required');
    assert.equal(moveSetting('g', 'disabled', 'opportunistic'), 'opportunistic');
    assert.equal(moveSetting('g', 'required', 'required'), 'required');
    for (const [setting, mode] of [
      ['required', 'disabled'],
      ['required', 'opportunistic'],
      ['opportunistic', 'disabled'],
    ] as const) {
      assert.throws(
        () => moveSetting('g', setting, mode),
        (e: FerryError) => e.code === 'ERR_FERRY_USAGE' && e.message.includes(`ferry vm set g --encrypted-migration ${mode}`),
      );
    }
  });

  it('evacuation refuses the whole plan when --mode would weaken one guest', function () {
    const guests: PlacementGuest[] = [
      { name: 'x', memoryBytes: GiB, encryptedMigration: 'opportunistic', nic: 'virtio' },
      { name: 'y', memoryBytes: GiB, encryptedMigration: 'required', nic: 'virtio' },
    ];
    assert.throws(() => planEvacuation(a, guests, [{ ...b, freeMemoryBytes: 8 * GiB, hasSriov: false }], 'disabled'), {
      code: 'ERR_FERRY_USAGE',
    });
  });

  it('places an opportunistic guest on a host that encrypts when one has room, though another has more free memory', function () {
    const guests: PlacementGuest[] = [{ name: 'x', memoryBytes: GiB, encryptedMigration: 'opportunistic', nic: 'virtio' }];
    const targets = [
      { name: 'old', encrypts: false, freeMemoryBytes: 64 * GiB, hasSriov: false },
      { name: 'b', encrypts: true, freeMemoryBytes: 2 * GiB, hasSriov: false },
    ];
    assert.deepEqual(planEvacuation(a, guests, targets)[0], { guest: 'x', to: 'b', mode: 'encrypted', nicFallback: false });
    const full = [targets[0]!, { ...targets[1]!, freeMemoryBytes: GiB / 2 }];
    const plain = planEvacuation(a, guests, full)[0]!;
    assert.equal(plain.to, 'old');
    assert.match((plain as { warning?: string }).warning ?? '', /cannot encrypt/);
  });
});
