/** `ferry vm create NAME --host H --memory SIZE ...`: a new guest on a host. */
import { checkGuestName, defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError } from '../../errors.js';
import { formatBytes, parseSize } from '../../common/units.js';
import type { GuestConfig, GuestDriverName, NicKind } from '../../guest/types.js';
import { clusterHost } from '../../coordinator/cluster.js';
import { connectHost, eachHost } from '../../coordinator/connect.js';
import { parseEncryptedMigration } from '../../coordinator/mode.js';
import { formatWorkload, parseWorkload } from '../../guest/index.js';

interface VmCreateArgs {
  name: string;
  host: string;
  memory: string;
  disk: string;
  workload: string;
  nic: string;
  driver: string;
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
  if (bytes < min || bytes % PAGE !== 0) usage(`${option}: ${text} must be ${min > 0 ? `at least ${formatBytes(min)} and ` : ''}a multiple of 4 KiB`);
  return bytes;
}

function choice<T extends string>(value: string, option: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) usage(`${option}: "${value}" is not one of ${allowed.join(', ')}`);
  return value as T;
}

/** The synthetic guest is the one driver agents run yet; `qemu` is named in the config but refused. */
function driver(value: string): GuestDriverName {
  if (value === 'qemu') usage('--driver qemu: this version runs synthetic guests only (QEMU guests are not managed yet; `ferry bench migrate` drives QEMU only to compare)');
  return choice<GuestDriverName>(value, '--driver', ['synthetic']);
}

/** The guest config from the flags, checked before any host is asked. */
function guestConfig(args: VmCreateArgs): GuestConfig {
  checkGuestName(args.name);
  const asUsage = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      usage((err as Error).message);
    }
  };
  return {
    name: args.name,
    driver: driver(args.driver),
    memoryBytes: guestSize(args.memory, '--memory', 1 << 20),
    diskBytes: guestSize(args.disk, '--disk', 0),
    workload: asUsage(() => parseWorkload(args.workload)),
    nic: choice<NicKind>(args.nic, '--nic', ['virtio', 'sriov']),
    encryptedMigration: asUsage(() => parseEncryptedMigration(args['encrypted-migration'], '--encrypted-migration')),
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
      .option('disk', { type: 'string', default: '0', requiresArg: true, describe: 'disk image size (0: none)' })
      .option('workload', { type: 'string', default: 'idle', requiresArg: true, describe: 'idle | kv:get=N,set=N | dirty:RATE (e.g. dirty:200MB)' })
      .option('nic', { type: 'string', default: 'virtio', requiresArg: true, describe: 'virtio (emulated) | sriov (passthrough-class: needs a host made with --sriov)' })
      .option('driver', { type: 'string', default: 'synthetic', requiresArg: true, describe: 'synthetic (the only driver yet)' })
      .option('encrypted-migration', { type: 'string', default: 'opportunistic', requiresArg: true, describe: 'disabled | opportunistic | required' })
      .example('$0 vm create web1 --host a --memory 1GiB', 'an idle 1 GiB guest')
      .example('$0 vm create db1 --host a --memory 2GiB --disk 4GiB --workload kv:get=150000,set=50000 --encrypted-migration required', 'a key-value guest that only ever moves encrypted'),
  run: async (output, args) => {
    const config = guestConfig(args);
    const cluster = await openCluster(args);
    clusterHost(cluster, args.host);
    // Guest names are unique in the cluster: vm set/destroy and migrate find a guest by name.
    const others = await eachHost(cluster, [...cluster.hosts.keys()], (client) => client.call('guest.get', { name: config.name }));
    for (const [host, outcome] of others) {
      if (outcome.ok) throw new FerryError('ERR_FERRY_INPUT', `guest "${config.name}" already exists on host ${host}`);
      if (outcome.error.code !== 'ERR_FERRY_NOT_FOUND') output.warn(`could not check host ${host} for a guest named ${config.name}: ${outcome.error.message}`);
    }
    const client = await connectHost(cluster, args.host);
    try {
      const guest = await client.call('guest.create', { config }, { timeoutMs: 10 * 60_000 });
      output.print(`guest ${guest.name} ${guest.state} on ${guest.host}: ${formatBytes(guest.memoryBytes)} memory, ${guest.diskBytes ? `${formatBytes(guest.diskBytes)} disk, ` : ''}workload ${formatWorkload(guest.workload)}`);
      output.emit({ type: 'result', ok: true, guest });
    } finally {
      client.close();
    }
  },
});
