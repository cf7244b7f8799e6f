/**
 * `ferry vm create NAME --host H --memory SIZE ...`: a new guest on a host. The host refuses it up
 * front, before it makes anything, when its memory does not fit in the host's free memory less its
 * reserve (control/admission.ts); asking first would cost a capabilities call, whose first answer
 * waits for the agent's QEMU probe.
 */
import { checkGuestName, defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError } from '../../errors.js';
import { formatBytes, parseSize } from '../../common/units.js';
import path from 'node:path';
import type { GuestCreateRequest, GuestDriverName, NicKind, QemuDiskRequest } from '../../guest/types.js';
import { clusterHost } from '../../coordinator/cluster.js';
import { connectHost, eachHost } from '../../coordinator/connect.js';
import { parseEncryptedMigration } from '../../coordinator/mode.js';
import { describeGuest, parseWorkload } from '../../guest/index.js';

interface VmCreateArgs {
  name: string;
  host: string;
  memory: string;
  disk: string | string[];
  'shared-storage'?: string | string[];
  workload: string;
  nic: string;
  driver: string;
  cpus?: number;
  kernel?: string;
  initrd?: string;
  append?: string;
  accel?: string;
  'encrypted-migration': string;
  cluster?: string;
}

const PAGE = 4096;

function usage(message: string): never {
  throw new FerryError('ERR_FERRY_USAGE', message);
}

/** A guest size from a flag: at least `min`, whole 4 KiB pages; a usage error otherwise. */
export function guestSize(text: string, option: string, min: number): number {
  let bytes: number;
  try {
    bytes = parseSize(text, option);
  } catch (err) {
    usage((err as Error).message);
  }
  if (bytes < min || bytes % PAGE !== 0)
    usage(`${option}: ${text} must be ${min > 0 ? `at least ${formatBytes(min)} and ` : ''}a multiple of 4 KiB`);
  return bytes;
}

function choice<T extends string>(value: string, option: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) usage(`${option}: "${value}" is not one of ${allowed.join(', ')}`);
  return value as T;
}

/** A size of whole MiB (a new qcow2), or a file: an image in place on the guest's host. */
function qemuDisks(args: VmCreateArgs): QemuDiskRequest[] {
  const given = [args.disk].flat().filter((d) => d !== '0');
  const shared = new Set([args['shared-storage'] ?? []].flat().map((f) => path.resolve(f)));
  const disks = given.map((text, i): QemuDiskRequest => {
    let bytes: number | null = null;
    try {
      bytes = parseSize(text, '--disk');
    } catch {
      // not a size: a file
    }
    if (bytes === null) {
      const file = path.resolve(text);
      if (file.includes(',')) usage(`--disk ${text}: QEMU's options cannot hold a path with a comma`);
      return { file, shared: shared.delete(file) };
    }
    if (bytes < 1 << 20 || bytes % (1 << 20) !== 0) usage(`--disk ${text}: a new disk is at least 1 MiB, in whole MiB`);
    if (i >= 8) usage('--disk: 8 disks at most');
    return { bytes, shared: false };
  });
  if (disks.length > 8) usage('--disk: 8 disks at most');
  const [stray] = shared;
  if (stray !== undefined) usage(`--shared-storage ${stray}: not one of the --disk files (a disk on shared storage is an existing image)`);
  return disks;
}

/** The create request from the flags, checked before any host is asked. */
function guestRequest(args: VmCreateArgs): GuestCreateRequest {
  checkGuestName(args.name);
  const asUsage = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      usage((err as Error).message);
    }
  };
  const driver = choice<GuestDriverName>(args.driver, '--driver', ['synthetic', 'qemu']);
  const common = {
    name: args.name,
    nic: choice<NicKind>(args.nic, '--nic', ['virtio', 'sriov']),
    encryptedMigration: asUsage(() => parseEncryptedMigration(args['encrypted-migration'], '--encrypted-migration')),
  };
  const qemuOnly = (['cpus', 'kernel', 'initrd', 'append', 'accel'] as const).filter((o) => args[o] !== undefined);
  if (driver === 'synthetic') {
    if (qemuOnly.length) usage(`--${qemuOnly[0]} is for --driver qemu guests`);
    if (args['shared-storage'] !== undefined) usage('--shared-storage is for --driver qemu guests');
    if (Array.isArray(args.disk)) usage('--disk: a synthetic guest has one disk');
    return {
      ...common,
      driver,
      memoryBytes: guestSize(args.memory, '--memory', 1 << 20),
      diskBytes: guestSize(String(args.disk), '--disk', 0),
      workload: asUsage(() => parseWorkload(args.workload)),
    };
  }
  const disks = qemuDisks(args);
  if (args.workload !== 'idle')
    usage(
      "--workload is for synthetic guests; a QEMU guest runs its kernel (without --kernel, ferry's test guest, configured with --append)",
    );
  if (args.initrd && !args.kernel) usage('--initrd needs --kernel');
  const memoryBytes = guestSize(args.memory, '--memory', 16 << 20);
  if (memoryBytes % (1 << 20) !== 0) usage('--memory: a QEMU guest has whole MiB of memory');
  const cpus = args.cpus ?? 1;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) usage('--cpus: 1 to 64');
  return {
    ...common,
    driver,
    memoryBytes,
    cpus,
    accel: choice(args.accel ?? 'auto', '--accel', ['auto', 'kvm', 'tcg'] as const),
    ...(args.kernel ? { kernel: path.resolve(args.kernel) } : {}),
    ...(args.initrd ? { initrd: path.resolve(args.initrd) } : {}),
    append: args.append ?? '',
    ...(disks.length ? { disks } : {}),
  };
}

export const vmCreateCommand = defineCommand<VmCreateArgs>({
  command: 'create <name>',
  describe: 'create a guest on a host and start it',
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('name', { type: 'string', demandOption: true, describe: 'the guest name (a DNS label)' })
      .option('host', { type: 'string', demandOption: true, requiresArg: true, describe: 'the host to run it on' })
      .option('memory', { type: 'string', demandOption: true, requiresArg: true, describe: 'memory size: 512MiB, 1GiB, 8G' })
      .option('disk', {
        type: 'string',
        default: '0',
        requiresArg: true,
        describe: 'disk image size (0: none); qemu: SIZE (a new qcow2) or FILE (a raw or qcow2 image in place), repeatable',
      })
      .option('shared-storage', {
        type: 'string',
        requiresArg: true,
        describe: 'qemu: this --disk FILE is on storage every host sees at the same path: a migration copies nothing of it (repeatable)',
      })
      .option('workload', {
        type: 'string',
        default: 'idle',
        requiresArg: true,
        describe: 'idle | kv:get=N,set=N | dirty:RATE[,fill] (e.g. dirty:200MB; fill: memory and disk written once first)',
      })
      .option('nic', {
        type: 'string',
        default: 'virtio',
        requiresArg: true,
        describe: 'virtio (emulated) | sriov (passthrough-class: needs a host made with --sriov)',
      })
      .option('driver', {
        type: 'string',
        default: 'synthetic',
        requiresArg: true,
        describe: 'synthetic (a ferry process with real memory and a workload) | qemu (a QEMU/KVM virtual machine)',
      })
      .option('cpus', { type: 'number', requiresArg: true, describe: 'qemu: virtual CPUs (default 1)' })
      .option('kernel', {
        type: 'string',
        requiresArg: true,
        describe: "qemu: the kernel to boot, a file on the guest's host (default: ferry's test guest)",
      })
      .option('initrd', { type: 'string', requiresArg: true, describe: "qemu: an initramfs, a file on the guest's host" })
      .option('append', {
        type: 'string',
        requiresArg: true,
        describe: 'qemu: the kernel command line (the test guest takes fill=MiB window=MiB rate=KiB/s)',
      })
      .option('accel', {
        type: 'string',
        requiresArg: true,
        describe: 'qemu: auto (KVM where it runs at speed on the host, else TCG) | kvm | tcg',
      })
      .option('encrypted-migration', {
        type: 'string',
        default: 'opportunistic',
        requiresArg: true,
        describe: 'disabled | opportunistic | required',
      })
      .example('$0 vm create web1 --host a --memory 1GiB', 'an idle 1 GiB guest')
      .example(
        '$0 vm create db1 --host a --memory 2GiB --disk 4GiB --workload kv:get=150000,set=50000 --encrypted-migration required',
        'a key-value guest that only ever moves encrypted',
      )
      .example('$0 vm create vm1 --host a --driver qemu --memory 512MiB', "a QEMU virtual machine running ferry's test guest")
      .example(
        '$0 vm create vm3 --host a --driver qemu --memory 512MiB --disk 4GiB --disk /srv/images/data.raw',
        'a QEMU virtual machine with a new 4 GiB qcow2 disk and a raw image in place',
      )
      .example(
        '$0 vm create vm2 --host a --driver qemu --memory 1GiB --cpus 2 --kernel /boot/vmlinuz --initrd /boot/initrd.img --append console=ttyS0',
        'a QEMU virtual machine booting a Linux kernel',
      ),
  run: async (output, args) => {
    const config = guestRequest(args);
    const cluster = await openCluster(args);
    clusterHost(cluster, args.host);
    // Guest names are unique in the cluster: vm set/destroy and migrate find a guest by name.
    const others = await eachHost(cluster, [...cluster.hosts.keys()], (client) => client.call('guest.get', { name: config.name }));
    for (const [host, outcome] of others) {
      if (outcome.ok) throw new FerryError('ERR_FERRY_INPUT', `guest "${config.name}" already exists on host ${host}`);
      if (outcome.error.code !== 'ERR_FERRY_NOT_FOUND')
        output.warn(`could not check host ${host} for a guest named ${config.name}: ${outcome.error.message}`);
    }
    const client = await connectHost(cluster, args.host);
    try {
      const guest = await client.call('guest.create', { config }, { timeoutMs: 10 * 60_000 });
      output.print(`guest ${guest.name} ${guest.state} on ${guest.host}: ${describeGuest(guest)}`);
      output.emit({ type: 'result', ok: true, guest });
    } finally {
      client.close();
    }
  },
});
