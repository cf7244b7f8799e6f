/** `ferry vm show NAME [--json]`: one guest in detail, from the host that runs it. */
import { checkGuestName, defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { formatBytes } from '../../common/units.js';
import { locateGuest } from '../../coordinator/locate.js';
import { diskBytesOf, formatWorkload } from '../../guest/index.js';
import type { GuestInfo } from '../../control/protocol.js';
import { table } from '../table.js';

/** The fields of the human view, in order: what the guest is, then how it runs. */
export function guestDetails(g: GuestInfo): [string, string][] {
  const disk = diskBytesOf(g);
  const rows: [string, string][] = [
    ['name', g.name],
    ['host', g.host],
    ['state', g.state],
    ['driver', g.driver],
    ['memory', formatBytes(g.memoryBytes)],
    ['disk', disk ? formatBytes(disk) : 'none'],
    ['nic', g.nic],
    ['encrypted-migration', g.encryptedMigration],
    ['generation', `${g.generation ?? 0} (moves since it was created)`],
  ];
  if (g.driver === 'synthetic') rows.push(['workload', formatWorkload(g.workload)]);
  else {
    rows.push(['cpus', String(g.cpus)], ['machine', g.machine], ['accel', g.accel], ['uuid', g.uuid]);
    rows.push(['kernel', `${formatBytes(g.kernel.bytes)} sha256:${g.kernel.sha256.slice(0, 16)}…`]);
    if (g.initrd) rows.push(['initrd', `${formatBytes(g.initrd.bytes)} sha256:${g.initrd.sha256.slice(0, 16)}…`]);
    rows.push(['append', g.append || '(none)']);
  }
  rows.push(['pid', g.pid === null ? '-' : String(g.pid)]);
  if (g.opsPerSecond !== null) rows.push(['ops/s', String(Math.round(g.opsPerSecond))]);
  if (g.workloadReady !== null) rows.push(['workload ready', g.workloadReady ? 'yes' : 'no (still setting up)']);
  return rows;
}

export const vmShowCommand = defineCommand<{ name: string; cluster?: string }>({
  command: 'show <name>',
  describe: 'one guest in detail: where it runs, its config, its process',
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('name', { type: 'string', demandOption: true, describe: 'the guest' })
      .example('$0 vm show web1', 'web1: host, state, memory, disk, workload, process')
      .example('$0 vm show web1 --json', 'one result line with the whole guest'),
  run: async (output, args) => {
    checkGuestName(args.name);
    const cluster = await openCluster(args);
    const { guest } = await locateGuest(cluster, args.name);
    for (const line of table(guestDetails(guest).map(([k, v]) => [`${k}:`, v]))) output.print(line);
    output.emit({ type: 'result', ok: true, guest, error: null });
  },
});
