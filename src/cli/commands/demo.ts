/**
 * `ferry demo`: with nothing set up, a temporary cluster of two agents on 127.0.0.1, a guest at
 * work — a QEMU virtual machine running ferry's test guest where this machine runs QEMU guests, a
 * synthetic guest with a key-value workload otherwise — one encrypted live migration with progress,
 * the summary, and (QEMU) the guest's own console on the destination showing it kept running with
 * its memory intact; everything removed afterwards, also on failure and on SIGINT/SIGTERM.
 */
import { defineCommand } from '../command.js';
import { FerryError } from '../../errors.js';
import { describeGuest, parseWorkload, type GuestCreateRequest, type GuestDriverName, type TestGuestLine } from '../../guest/index.js';
import { connectHost } from '../../coordinator/connect.js';
import type { Cluster } from '../../coordinator/cluster.js';
import { LocalCluster } from '../demo-cluster.js';
import { awaitChecks, chooseDriver, DEMO_GUEST, demoRequest, showArrival, showDeparture } from '../demo-guest.js';
import type { Output } from '../output.js';
import { migrateWithProgress } from './migrate.js';
import { guestSize } from './vm-create.js';
import { sleep } from '../../common/async.js';

interface DemoArgs {
  driver?: string;
  memory?: string;
  workload?: string;
}

const DEFAULT_WORKLOAD = 'kv:get=20000,set=2000';
/** Small enough that QEMU under TCG fills and checks it in a few seconds. */
const DEFAULT_MEMORY: Record<GuestDriverName, string> = { synthetic: '1GiB', qemu: '256MiB' };

/** How long the demo waits for a guest's workload to set up before migrating it anyway. */
const WORKLOAD_SETUP_LIMIT_MS = 60_000;

async function call<T>(cluster: Cluster, host: string, fn: (client: Awaited<ReturnType<typeof connectHost>>) => Promise<T>): Promise<T> {
  const client = await connectHost(cluster, host);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

const guestOn = (cluster: Cluster, host: string) => call(cluster, host, (c) => c.call('guest.get', { name: DEMO_GUEST }));

/** What the guest is doing, in a few words: ops/s of a workload, pages a second of the test guest. */
function activity(driver: GuestDriverName, opsPerSecond: number | null): string {
  // The test guest's rate comes from its last two ticks: none yet, just after it arrived.
  if (opsPerSecond === null || (driver === 'qemu' && opsPerSecond === 0)) return '';
  return `, ${Math.round(opsPerSecond)} ${driver === 'qemu' ? 'pages rewritten a second' : 'ops/s'}`;
}

async function run(output: Output, args: DemoArgs, local: LocalCluster): Promise<void> {
  output.info(`ferry demo: a cluster in ${local.root} (removed at the end)`);
  output.emit({ type: 'demo', dir: local.root });
  output.info('  CA and certificates; agents of hosts a and b on 127.0.0.1 ...');
  const cluster = await local.start(['a', 'b']);
  // The agent that will run the guest says what it can run (its QEMU probe: a few seconds).
  const caps = await call(cluster, 'a', (c) => c.call('capabilities', {}));
  // --workload alone means a synthetic guest: only those have workloads.
  const asked = (args.driver ?? (args.workload !== undefined ? 'synthetic' : undefined)) as GuestDriverName | undefined;
  const choice = chooseDriver(asked, caps);
  output.emit({ type: 'choice', driver: choice.driver, reason: choice.reason });
  output.info(`  the guest: ${choice.reason}`);
  const request = requestOf(choice.driver, args);
  output.info(`  guest "${DEMO_GUEST}" on host a: ${describeGuest(await create(cluster, request))} ...`);

  // Migrate a guest at work, as an operator would: a workload set up (the kv store loaded), or the
  // test guest's memory filled and checked once, and a second of running for its figures.
  if (choice.driver === 'qemu') {
    output.info('  waiting for the test guest to fill its memory and check it once ...');
    await awaitChecks(cluster, 'a', 1);
  } else {
    await waitForWorkload(output, cluster);
  }
  await sleep(1100);
  const before = await guestOn(cluster, 'a');
  let departure: TestGuestLine[] = [];
  if (choice.driver === 'qemu') {
    const { lines, raw } = await awaitChecks(cluster, 'a', 1);
    departure = lines;
    showDeparture(output, 'a', raw);
  }
  output.info(`  guest running on a (pid ${before.pid}${activity(choice.driver, before.opsPerSecond)}); migrating it to b, encrypted:`);
  await migrateWithProgress(output, {
    guest: DEMO_GUEST,
    cluster,
    to: { cluster, host: cluster.hosts.get('b')!, crossCluster: false, label: 'b' },
    mode: 'required',
  });
  if (choice.driver === 'qemu') await showArrival(output, cluster, { host: 'a', lines: departure }, 'b');
  else await sleep(1100); // a second at its new home, for its ops/s figure
  const after = await guestOn(cluster, 'b');
  output.info(
    `  guest now runs on b (pid ${after.pid}, state ${after.state}${activity(choice.driver, after.opsPerSecond)}); cleaning up ...`,
  );
  await call(cluster, 'b', (c) => c.call('guest.destroy', { name: DEMO_GUEST }, { timeoutMs: 60_000 }));
}

function requestOf(driver: GuestDriverName, args: DemoArgs): GuestCreateRequest {
  if (driver === 'qemu' && args.workload !== undefined) {
    throw new FerryError('ERR_FERRY_USAGE', "--workload is for synthetic guests; the QEMU guest runs ferry's test guest");
  }
  let workload;
  try {
    workload = parseWorkload(args.workload ?? DEFAULT_WORKLOAD);
  } catch (err) {
    throw new FerryError('ERR_FERRY_USAGE', `--workload: ${(err as Error).message}`);
  }
  const memoryBytes = guestSize(args.memory ?? DEFAULT_MEMORY[driver], '--memory', driver === 'qemu' ? 16 << 20 : 1 << 20);
  if (driver === 'qemu' && memoryBytes % (1 << 20) !== 0)
    throw new FerryError('ERR_FERRY_USAGE', '--memory: a QEMU guest has whole MiB of memory');
  return demoRequest(driver, memoryBytes, workload);
}

async function create(cluster: Cluster, request: GuestCreateRequest) {
  return call(cluster, 'a', (c) => c.call('guest.create', { config: request }, { timeoutMs: 10 * 60_000 }));
}

async function waitForWorkload(output: Output, cluster: Cluster): Promise<void> {
  let guest = await guestOn(cluster, 'a');
  if (guest.workloadReady === false) output.info('  waiting for the workload to set up (loading the key-value store) ...');
  for (const started = performance.now(); guest.workloadReady === false && performance.now() - started < WORKLOAD_SETUP_LIMIT_MS;) {
    await sleep(250);
    guest = await guestOn(cluster, 'a');
  }
}

export const demoCommand = defineCommand<DemoArgs>({
  command: 'demo',
  describe: 'two local agents, one guest (QEMU where it runs, else synthetic), one encrypted live migration; everything removed afterwards',
  builder: (yargs) =>
    yargs
      .option('driver', {
        type: 'string',
        choices: ['synthetic', 'qemu'],
        requiresArg: true,
        describe:
          "the guest: qemu (a QEMU virtual machine running ferry's test guest) or synthetic; default qemu where this machine runs QEMU guests",
      })
      .option('memory', { type: 'string', requiresArg: true, describe: "the guest's memory (default 256MiB for qemu, 1GiB for synthetic)" })
      .option('workload', {
        type: 'string',
        requiresArg: true,
        describe: `synthetic: idle | kv:get=N,set=N | dirty:RATE[,fill] (default ${DEFAULT_WORKLOAD})`,
      })
      .example('$0 demo', 'a QEMU guest where QEMU runs here, else a 1 GiB key-value guest, moved between two local agents')
      .example('$0 demo --driver synthetic --memory 256MiB --json', 'a smaller synthetic guest, with JSON events and the result line'),
  run: async (output, args) => {
    // Bad flags: exit 2 before anything starts (a size QEMU cannot take, once QEMU is chosen).
    if (args.driver !== undefined) requestOf(args.driver as GuestDriverName, args);
    else requestOf('synthetic', args);
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
      await run(output, args, local);
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
