/** `ferry vm ...`: bad input is refused with exit 2 and one line before any host is asked. */
import assert from 'node:assert/strict';
import { ferry } from '../support/cli.js';

describe('cli: vm usage errors', function () {
  const env = { FERRY_CLUSTER: '/nonexistent/cluster.yaml' };
  const cases: [string[], RegExp][] = [
    [['vm', 'create', 'g1', '--host', 'a', '--memory', '1XB'], /--memory: unknown unit "XB" in "1XB"/],
    [['vm', 'create', 'g1', '--host', 'a', '--memory', '1000'], /--memory: 1000 must be at least 1\.00 MiB and a multiple of 4 KiB/],
    [['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--disk', '100'], /--disk: 100 must be a multiple of 4 KiB/],
    [['vm', 'create', 'G1', '--host', 'a', '--memory', '1GiB'], /"G1" is not a guest name/],
    [['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--workload', 'kv:get=1'], /workload|kv/],
    [['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--workload', 'busy'], /is not idle, kv:get=N,set=N or dirty:RATE|use idle/],
    [['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--nic', 'e1000'], /--nic: "e1000" is not one of virtio, sriov/],
    [['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--driver', 'xen'], /--driver: "xen" is not one of synthetic, qemu/],
    [
      ['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--driver', 'qemu', '--workload', 'kv:get=1,set=1'],
      /--workload is for synthetic guests/,
    ],
    [
      ['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--driver', 'qemu', '--disk', '1500KiB'],
      /--disk 1500KiB: a new disk is at least 1 MiB, in whole MiB/,
    ],
    [
      ['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--driver', 'qemu', '--disk', '1GiB', '--shared-storage', '/srv/a.raw'],
      /--shared-storage \/srv\/a\.raw: not one of the --disk files/,
    ],
    [
      ['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--disk', '1GiB', '--disk', '2GiB'],
      /--disk: a synthetic guest has one disk/,
    ],
    [['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--driver', 'qemu', '--initrd', '/x'], /--initrd needs --kernel/],
    [['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--driver', 'qemu', '--cpus', '0'], /--cpus: 1 to 64/],
    [
      ['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--driver', 'qemu', '--accel', 'hvf'],
      /--accel: "hvf" is not one of auto, kvm, tcg/,
    ],
    [['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--kernel', '/boot/vmlinuz'], /--kernel is for --driver qemu guests/],
    [['vm', 'create', 'g1', '--host', 'a', '--memory', '20000KiB', '--driver', 'qemu'], /--memory: a QEMU guest has whole MiB of memory/],
    [['vm', 'console', 'G1'], /"G1" is not a guest name/],
    [['vm', 'console', 'g1', '--tail'], /Unknown argument: tail/],
    [
      ['vm', 'create', 'g1', '--host', 'a', '--memory', '1GiB', '--encrypted-migration', 'maybe'],
      /--encrypted-migration: "maybe" is not one of disabled, opportunistic, required/,
    ],
    [['vm', 'create', 'g1', '--memory', '1GiB'], /Missing required argument: host/],
    [['vm', 'set', 'g1', '--encrypted-migration', 'always'], /--encrypted-migration: "always"/],
    [['vm', 'list', '--bogus'], /Unknown argument: bogus/],
    [['vm', 'list'], /cannot read cluster file \/nonexistent\/cluster\.yaml/],
  ];
  for (const [args, message] of cases) {
    it(`ferry ${args.join(' ')}`, function () {
      const r = ferry(args, env);
      assert.equal(r.status, 2, r.stderr);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, message);
      assert.equal(r.stdout, '');
    });
  }

  it('has help with examples for each vm command', function () {
    for (const cmd of ['create', 'list', 'set', 'destroy', 'console']) {
      const r = ferry(['vm', cmd, '--help']);
      assert.equal(r.status, 0);
      assert.match(r.stdout, /Examples:/, cmd);
    }
  });
});
