/**
 * `ferry host init NAME --dir HOSTDIR --control ADDR --network ADDR[,ADDR...]`: a host's state
 * directory with its certificate from the cluster CA, and the host added to the cluster file.
 */
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError } from '../../errors.js';
import { addressProblem } from '../../common/address.js';
import { HOST_NAME } from '../../common/names.js';
import { addClusterHost, addressConflict, type Cluster, type MigrationNetwork } from '../../coordinator/cluster.js';
import { parseSize } from '../../common/units.js';
import { DEFAULT_MEMORY_RESERVE_BYTES } from '../../control/admission.js';
import { issueHostCertificate } from '../../coordinator/pki.js';
import { ensurePrivateDir, writeFileAtomic } from '../../common/atomic-file.js';
import { DEFAULT_LIMITS, MAX_MIGRATION_SLOTS, StateDir, cryptoThreadsPerMigration, type HostConfig } from '../../agent/state.js';
import type { Limits } from '../../control/protocol.js';
import { MAX_THREADS } from '../../crypto/backend.js';

interface HostInitArgs {
  name: string;
  dir: string;
  control: string;
  network: string;
  advertise?: string;
  sriov: boolean;
  'max-outgoing': number;
  'max-incoming': number;
  'crypto-threads'?: number;
  'memory-reserve': string;
  cluster?: string;
}

function addressList(text: string, option: string): string[] {
  const list = text.split(',').map((s) => s.trim());
  for (const a of list) {
    const problem = addressProblem(a);
    if (problem) throw new FerryError('ERR_FERRY_USAGE', `${option}: ${problem}`);
  }
  return list;
}

function limit(value: number, option: string, max: number): number {
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    // yargs makes NaN of what is not a number: say so rather than print "NaN".
    throw new FerryError(
      'ERR_FERRY_USAGE',
      `${option}: ${Number.isNaN(value) ? 'not' : `${value} is not`} a whole number from 1 to ${max}`,
    );
  }
  return value;
}

function limits(args: HostInitArgs): Limits {
  const slots = {
    outgoing: limit(args['max-outgoing'], '--max-outgoing', MAX_MIGRATION_SLOTS),
    incoming: limit(args['max-incoming'], '--max-incoming', MAX_MIGRATION_SLOTS),
  };
  const threads = args['crypto-threads'];
  return threads === undefined ? slots : { ...slots, cryptoThreads: limit(threads, '--crypto-threads', MAX_THREADS) };
}

/** Checks everything before anything is written: bad input changes nothing. */
function hostConfig(args: HostInitArgs): HostConfig {
  if (!HOST_NAME.test(args.name)) {
    throw new FerryError('ERR_FERRY_USAGE', `"${args.name}" is not a host name: lower-case letters, digits and dashes, 1-63 characters`);
  }
  const controlProblem = addressProblem(args.control);
  if (controlProblem) throw new FerryError('ERR_FERRY_USAGE', `--control: ${controlProblem}`);
  const listen = addressList(args.network, '--network');
  const advertise = args.advertise === undefined ? [] : addressList(args.advertise, '--advertise');
  if (advertise.length > listen.length) {
    throw new FerryError('ERR_FERRY_USAGE', `--advertise has ${advertise.length} addresses for ${listen.length} --network addresses`);
  }
  const networks: MigrationNetwork[] = listen.map((l, i) => ({ listen: l, advertise: advertise[i] ?? l }));
  ownAddressesApart(args.control, listen);
  let memoryReserveBytes: number;
  try {
    memoryReserveBytes = parseSize(args['memory-reserve'], '--memory-reserve');
  } catch (err) {
    throw new FerryError('ERR_FERRY_USAGE', (err as Error).message);
  }
  return {
    name: args.name,
    control: args.control,
    networks,
    hasSriov: args.sriov,
    limits: limits(args),
    memoryReserveBytes,
  };
}

/** The host's own control and listen addresses are all different (port 0 lets the kernel pick each). */
function ownAddressesApart(control: string, listen: string[]): void {
  const seen = new Map<string, string>();
  for (const [address, flag] of [[control, '--control'], ...listen.map((l) => [l, '--network'])] as [string, string][]) {
    if (address.endsWith(':0')) continue;
    const first = seen.get(address.toLowerCase());
    if (first) throw new FerryError('ERR_FERRY_USAGE', `${flag} ${address} is also given to ${first}: each address once`);
    seen.set(address.toLowerCase(), flag);
  }
}

/**
 * Makes host `config.name` in `dir`: its key and certificate from the cluster CA, its state
 * directory, and its entry in the cluster file. Checks everything before writing anything.
 * Returns the absolute directory.
 */
export async function initHost(cluster: Cluster, config: HostConfig, hostDir: string): Promise<string> {
  if (cluster.hosts.has(config.name)) throw new FerryError('ERR_FERRY_INPUT', `host "${config.name}" is already in ${cluster.file}`);
  const conflict = addressConflict(cluster, { name: config.name, control: config.control, networks: config.networks });
  if (conflict) throw new FerryError('ERR_FERRY_INPUT', conflict);
  if (!cluster.caKey)
    throw new FerryError('ERR_FERRY_INPUT', `${cluster.file} names no CA key (ca.key): host init must run where the CA key is`);
  const dir = path.resolve(hostDir);
  const paths = StateDir.paths(dir);
  for (const f of [paths.config, paths.key, paths.cert]) {
    if (existsSync(f)) throw new FerryError('ERR_FERRY_INPUT', `${f} already exists: use a new directory for a new host`);
  }
  await fs.access(cluster.caKey).catch(() => {
    throw new FerryError('ERR_FERRY_NOT_FOUND', `cannot read the CA key ${cluster.caKey} (named in ${cluster.file})`);
  });

  await ensurePrivateDir(dir);
  const cert = await issueHostCertificate({ caCert: cluster.caCert, caKey: cluster.caKey }, config.name, paths.key);
  await writeFileAtomic(paths.cert, cert);
  await writeFileAtomic(paths.caCert, await fs.readFile(cluster.caCert));
  await StateDir.create(dir, config);
  await addClusterHost(cluster.file, { name: config.name, control: config.control, networks: config.networks });
  return dir;
}

export const hostInitCommand = defineCommand<HostInitArgs>({
  command: 'init <name>',
  describe: 'make a host: certificate from the cluster CA, state directory, entry in the cluster file',
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('name', { type: 'string', demandOption: true, describe: 'the host name (a DNS label)' })
      .option('dir', { type: 'string', demandOption: true, requiresArg: true, describe: 'the host state directory (made 0700)' })
      .option('control', { type: 'string', demandOption: true, requiresArg: true, describe: 'HOST:PORT of the control API' })
      .option('network', {
        type: 'string',
        demandOption: true,
        requiresArg: true,
        describe: 'migration listen addresses, in preference order: ADDR[,ADDR...]',
      })
      .option('advertise', {
        type: 'string',
        requiresArg: true,
        describe: 'what the cluster file tells sources, per --network address (NAT, relays)',
      })
      .option('sriov', { type: 'boolean', default: false, describe: 'this host has a passthrough-class NIC' })
      .option('max-outgoing', {
        type: 'number',
        default: DEFAULT_LIMITS.outgoing,
        describe: 'outgoing migrations at once (more wait in a queue)',
      })
      .option('max-incoming', {
        type: 'number',
        default: DEFAULT_LIMITS.incoming,
        describe: 'incoming migrations at once (more wait in a queue)',
      })
      .option('memory-reserve', {
        type: 'string',
        default: `${DEFAULT_MEMORY_RESERVE_BYTES / 2 ** 30}GiB`,
        requiresArg: true,
        describe: 'memory kept from guests for the host itself: a guest is refused here unless it fits in free memory less this',
      })
      .option('crypto-threads', {
        type: 'number',
        requiresArg: true,
        describe:
          "threads all of this host's migrations together may seal/open on, shared equally among the outgoing + incoming slots (default: every core for each migration)",
      })
      .example('$0 host init a --dir /var/lib/ferry --control 10.0.0.1:7000 --network 10.1.0.1:7100', 'a host with one migration network')
      .example(
        '$0 host init c --dir ./c --control 127.0.0.1:7002 --network 127.0.0.1:7102 --crypto-threads 8',
        'crypto of all its migrations on 8 threads: 2 for each of its 2 + 2 migration slots',
      )
      .example(
        '$0 host init d --dir ./d --control 127.0.0.1:7003 --network 127.0.0.1:7103 --memory-reserve 4GiB',
        'guests may use all free memory but 4 GiB',
      )
      .example(
        '$0 host init b --dir ./b --control 127.0.0.1:7001 --network 10.1.0.2:7100,127.0.0.1:7101 --advertise 203.0.113.9:7100',
        'two networks; the first reached through NAT',
      ),
  run: async (output, args) => {
    const config = hostConfig(args);
    const cluster = await openCluster(args);
    const dir = await initHost(cluster, config, args.dir);
    const { outgoing, incoming, cryptoThreads } = config.limits;
    if (cryptoThreads !== undefined && cryptoThreads < outgoing + incoming) {
      output.warn(
        `--crypto-threads ${cryptoThreads} is less than the ${outgoing + incoming} migration slots: each migration still gets 1 thread, ` +
          `so up to ${outgoing + incoming} can be busy at once; lower --max-outgoing/--max-incoming to keep within ${cryptoThreads}`,
      );
    }
    output.print(`host ${config.name} added to ${cluster.file}; start its agent with: ferry host serve --dir ${dir}`);
    output.emit({
      type: 'result',
      ok: true,
      host: config.name,
      dir,
      control: config.control,
      networks: config.networks,
      hasSriov: config.hasSriov,
      limits: config.limits,
      memoryReserveBytes: config.memoryReserveBytes,
      cryptoThreadsPerMigration: cryptoThreadsPerMigration(config.limits) ?? null,
    });
  },
});
