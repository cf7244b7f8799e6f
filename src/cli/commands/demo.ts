/**
 * `ferry demo`: with nothing set up, a temporary cluster of two agents on 127.0.0.1, a guest
 * running the key-value workload, one encrypted live migration with progress, the summary — and
 * everything removed afterwards, also on failure and on SIGINT/SIGTERM.
 */
import { defineCommand } from '../command.js';
import { FerryError } from '../../errors.js';
import { formatBytes } from '../../common/units.js';
import { describeGuest, parseWorkload } from '../../guest/index.js';
import { connectHost } from '../../coordinator/connect.js';
import type { Cluster } from '../../coordinator/cluster.js';
import type { SyntheticConfig } from '../../guest/types.js';
import { LocalCluster } from '../demo-cluster.js';
import type { Output } from '../output.js';
import { migrateWithProgress } from './migrate.js';
import { guestSize } from './vm-create.js';
import { sleep } from '../../common/async.js';

interface DemoArgs {
  memory: string;
  workload: string;
}

const GUEST = 'demo';

/** How long the demo waits for a guest's workload to set up before migrating it anyway. */
const WORKLOAD_SETUP_LIMIT_MS = 60_000;

async function guestOn(cluster: Cluster, host: string) {
  const client = await connectHost(cluster, host);
  try {
    return await client.call('guest.get', { name: GUEST });
  } finally {
    client.close();
  }
}

async function run(output: Output, config: SyntheticConfig, local: LocalCluster): Promise<void> {
  output.info(`ferry demo: a cluster in ${local.root} (removed at the end)`);
  output.emit({ type: 'demo', dir: local.root });
  output.info('  CA and certificates; agents of hosts a and b on 127.0.0.1 ...');
  const cluster = await local.start(['a', 'b']);
  output.info(`  guest "${GUEST}" on host a: ${describeGuest(config)} ...`);
  const a = await connectHost(cluster, 'a');
  try {
    await a.call('guest.create', { config }, { timeoutMs: 10 * 60_000 });
  } finally {
    a.close();
  }
  // Migrate a guest at work, as an operator would: after its workload has set up (the kv store is
  // loaded) and run for a second, so it has an ops/s figure and a steady dirty rate.
  let before = await guestOn(cluster, 'a');
  if (before.workloadReady === false) output.info('  waiting for the workload to set up (loading the key-value store) ...');
  for (const started = Date.now(); before.workloadReady === false && Date.now() - started < WORKLOAD_SETUP_LIMIT_MS; ) {
    await sleep(250);
    before = await guestOn(cluster, 'a');
  }
  await sleep(1100);
  before = await guestOn(cluster, 'a');
  output.info(`  guest running on a (pid ${before.pid}${before.opsPerSecond !== null ? `, ${Math.round(before.opsPerSecond)} ops/s` : ''}); migrating it to b, encrypted:`);
  await migrateWithProgress(output, {
    guest: GUEST,
    cluster,
    to: { cluster, host: cluster.hosts.get('b')!, crossCluster: false, label: 'b' },
    mode: 'required',
  });
  await sleep(1100); // a second at its new home, for its ops/s figure
  const after = await guestOn(cluster, 'b');
  output.info(`  guest now runs on b (pid ${after.pid}, state ${after.state}${after.opsPerSecond !== null ? `, ${Math.round(after.opsPerSecond)} ops/s` : ''}); cleaning up ...`);
}

export const demoCommand = defineCommand<DemoArgs>({
  command: 'demo',
  describe: 'two local agents, one guest, one encrypted live migration; everything removed afterwards',
  builder: (yargs) =>
    yargs
      .option('memory', { type: 'string', default: '1GiB', requiresArg: true, describe: "the guest's memory" })
      .option('workload', { type: 'string', default: 'kv:get=20000,set=2000', requiresArg: true, describe: 'idle | kv:get=N,set=N | dirty:RATE' })
      .example('$0 demo', 'a 1 GiB key-value guest moved between two local agents')
      .example('$0 demo --memory 256MiB --json', 'smaller, with JSON events and the result line'),
  run: async (output, args) => {
    let workload;
    try {
      workload = parseWorkload(args.workload);
    } catch (err) {
      throw new FerryError('ERR_FERRY_USAGE', `--workload: ${(err as Error).message}`);
    }
    const config: SyntheticConfig = {
      name: GUEST,
      driver: 'synthetic',
      memoryBytes: guestSize(args.memory, '--memory', 1 << 20),
      diskBytes: 0,
      workload,
      nic: 'virtio',
      encryptedMigration: 'required',
    };
    const local = LocalCluster.create();
    let interrupted: NodeJS.Signals | null = null;
    const onSignal = (signal: NodeJS.Signals) => {
      interrupted = signal;
      output.warn(`${signal}: stopping the demo's agents and guests and removing ${local.root}`);
      void local.close(); // the work in flight fails as its agents go, and then returns here
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      await run(output, config, local);
    } catch (err) {
      if (interrupted) throw new FerryError('ERR_FERRY_ABORTED', `interrupted by ${interrupted}; everything the demo made is removed`);
      // What the agents saw goes with the failure: their logs are removed with the cluster.
      for (const w of local.warnings()) output.warn(`agent ${w}`);
      throw err;
    } finally {
      await local.close();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    if (interrupted) throw new FerryError('ERR_FERRY_ABORTED', `interrupted by ${interrupted}; everything the demo made is removed`);
    output.info('  done: agents stopped, guest processes gone, temporary directory removed');
  },
});
