/**
 * The guest `ferry demo` moves: a QEMU virtual machine running ferry's test guest where this
 * machine runs QEMU guests (its agents say so), a synthetic guest otherwise; and, for the QEMU
 * guest, the proof from its own serial console that it kept running with its memory intact.
 */
import { FerryError } from '../errors.js';
import { sleep } from '../common/async.js';
import type { Cluster } from '../coordinator/cluster.js';
import type { Capabilities } from '../control/protocol.js';
import { parseTestGuestLog, type GuestCreateRequest, type GuestDriverName, type TestGuestLine, type Workload } from '../guest/index.js';
import { readConsole } from './commands/vm-console.js';
import type { Output } from './output.js';

export const DEMO_GUEST = 'demo';

/** How long the test guest may take to fill its memory and check it once, under TCG. */
const FIRST_CHECK_LIMIT_MS = 120_000;
const CONSOLE_POLL_MS = 500;
/** How long the destination's console may take to show a tick once its checks are in. */
const TICK_WAIT_MS = 20_000;

export interface DemoChoice {
  driver: GuestDriverName;
  /** Why this driver, in a sentence for the operator. */
  reason: string;
}

/** The driver asked for, or (none asked for) QEMU where the agent says it runs QEMU guests. */
export function chooseDriver(asked: GuestDriverName | undefined, caps: Capabilities): DemoChoice {
  const qemu = caps.drivers?.qemu ?? { available: caps.qemu, detail: caps.qemu ? 'QEMU' : 'this agent does not say' };
  const runsOn = ['QEMU', qemu.version, qemu.accelerator && `on ${qemu.accelerator.toUpperCase()}`].filter(Boolean).join(' ');
  if (asked === 'synthetic') return { driver: 'synthetic', reason: 'a synthetic guest, as --driver synthetic asks' };
  if (asked === 'qemu') {
    if (!qemu.available) throw new FerryError('ERR_FERRY_REFUSED', `--driver qemu: this machine cannot run QEMU guests: ${qemu.detail}`);
    return { driver: 'qemu', reason: `a QEMU virtual machine (${runsOn}), as --driver qemu asks` };
  }
  if (qemu.available)
    return {
      driver: 'qemu',
      reason: `a QEMU virtual machine running ferry's test guest, since this machine runs QEMU guests (${runsOn}); --driver synthetic for a synthetic guest`,
    };
  return {
    driver: 'synthetic',
    reason: `a synthetic guest (a ferry process with real memory and a workload), since this machine runs no QEMU guests: ${qemu.detail}`,
  };
}

export function demoRequest(driver: GuestDriverName, memoryBytes: number, workload: Workload): GuestCreateRequest {
  const common = { name: DEMO_GUEST, memoryBytes, nic: 'virtio', encryptedMigration: 'required' } as const;
  if (driver === 'synthetic') return { ...common, driver, diskBytes: 0, workload };
  // The test guest with its defaults: all of its memory filled, an 8 MiB window rewritten flat out.
  return { ...common, driver, cpus: 1, accel: 'auto', append: '' };
}

/** The test guest's console on `host`, parsed; refuses a console that shows damaged memory. */
async function testGuestLines(cluster: Cluster, host: string): Promise<{ lines: TestGuestLine[]; raw: string[] }> {
  const text = await readConsole(cluster, host, DEMO_GUEST);
  const lines = parseTestGuestLog(text);
  const bad = lines.find((l) => l.kind === 'fail' || l.kind === 'error' || (l.kind === 'check' && !l.ok));
  if (bad) throw new FerryError('ERR_FERRY_ABORTED', `the test guest on ${host} found its memory damaged: ${JSON.stringify(bad)}`);
  const raw = text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .filter(Boolean);
  return { lines, raw };
}

/**
 * Waits until the console of the test guest on `host` shows `sweeps` checks of all of its memory,
 * and returns it then. On a destination, whose console begins at the guest's arrival, the first
 * check may have begun on the source; the second was all done here.
 */
export async function awaitChecks(cluster: Cluster, host: string, sweeps: number): Promise<{ lines: TestGuestLine[]; raw: string[] }> {
  const deadline = performance.now() + FIRST_CHECK_LIMIT_MS;
  for (;;) {
    const got = await testGuestLines(cluster, host);
    if (got.lines.filter((l) => l.kind === 'check').length >= sweeps) return got;
    if (performance.now() > deadline)
      throw new FerryError(
        'ERR_FERRY_TIMEOUT',
        `the test guest on ${host} did not check its memory ${sweeps === 1 ? 'once' : `${sweeps} times`} within ${FIRST_CHECK_LIMIT_MS / 1000} s`,
      );
    await sleep(CONSOLE_POLL_MS);
  }
}

const last = <K extends TestGuestLine['kind']>(lines: TestGuestLine[], kind: K) =>
  lines.filter((l): l is Extract<TestGuestLine, { kind: K }> => l.kind === kind).pop();

/**
 * Shows the last lines of the test guest's console on the destination, once it has checked all of
 * its memory there, and says what they prove: its clock went on from where it was on the source,
 * and every page held what the guest last wrote.
 */
export async function showArrival(
  output: Output,
  cluster: Cluster,
  from: { host: string; lines: TestGuestLine[] },
  to: string,
): Promise<void> {
  let { lines, raw } = await awaitChecks(cluster, to, 2);
  // A tick is what shows the clock went on. On a busy host checks can come faster than the guest's
  // ticks: wait a little for one, and say less if none came.
  for (const deadline = performance.now() + TICK_WAIT_MS; !last(lines, 'tick') && performance.now() < deadline;) {
    await sleep(CONSOLE_POLL_MS);
    ({ lines, raw } = await testGuestLines(cluster, to));
  }
  output.info(`  ${to}'s console since the guest arrived (its serial port, through \`ferry vm console ${DEMO_GUEST}\`):`);
  for (const line of raw.slice(-4)) output.info(`    ${line}`);
  const before = last(from.lines, 'tick');
  const after = last(lines, 'tick');
  const check = last(lines, 'check')!;
  const clock = before && after ? `its clock went on (tick ${before.seconds} on ${from.host}, tick ${after.seconds} on ${to})` : 'it runs';
  output.info(
    `  the guest kept running: ${clock}, and check ${check.sweep}, all of it on ${to}, found all ${check.pages} pages it fills as it last wrote them`,
  );
}

/** The source's last console lines before the move, shown as one line. */
export function showDeparture(output: Output, host: string, raw: string[]): void {
  output.info(`  ${host}'s console: ${raw.slice(-2).join(' | ')}`);
}
