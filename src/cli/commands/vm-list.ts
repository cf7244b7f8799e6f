/** `ferry vm list [--host H] [--json]`: every guest of the cluster (or of one host). */
import { defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError } from '../../errors.js';
import { formatBytes } from '../../common/units.js';
import type { GuestInfo } from '../../control/protocol.js';
import { diskBytesOf } from '../../guest/index.js';
import { clusterHost } from '../../coordinator/cluster.js';
import { eachHost } from '../../coordinator/connect.js';
import { staleCopies } from '../../coordinator/locate.js';
import { table } from '../table.js';

/** What `vm list --json` prints per guest, one object a line. */
export function guestLine(g: GuestInfo, stale = false): Record<string, unknown> {
  return {
    type: 'guest',
    name: g.name,
    host: g.host,
    state: g.state,
    generation: g.generation ?? 0,
    stale,
    memoryBytes: g.memoryBytes,
    diskBytes: diskBytesOf(g),
    driver: g.driver,
    encryptedMigration: g.encryptedMigration,
    nic: g.nic,
    ...(g.driver === 'synthetic' ? { workload: g.workload } : { cpus: g.cpus, machine: g.machine, accel: g.accel }),
    pid: g.pid,
    opsPerSecond: g.opsPerSecond,
    workloadReady: g.workloadReady,
  };
}

export const vmListCommand = defineCommand<{ host?: string; cluster?: string }>({
  command: 'list',
  describe: 'list the guests of every host (or of one)',
  builder: (yargs) =>
    withClusterOption(yargs)
      .option('host', { type: 'string', requiresArg: true, describe: 'only this host' })
      .example('$0 vm list', 'a table of every guest')
      .example('$0 vm list --host a --json', 'one JSON object per guest of host a'),
  run: async (output, args) => {
    const cluster = await openCluster(args);
    const hosts = args.host ? [clusterHost(cluster, args.host).name] : [...cluster.hosts.keys()];
    const answers = await eachHost(cluster, hosts, (client) => client.call('guest.list', {}));
    const guests: GuestInfo[] = [];
    const failed: string[] = [];
    for (const [host, outcome] of answers) {
      if (outcome.ok) guests.push(...outcome.value.guests);
      else {
        failed.push(host);
        output.warn(`host ${host}: ${outcome.error.message}`);
      }
    }
    guests.sort((a, b) => a.host.localeCompare(b.host) || a.name.localeCompare(b.name));
    // Stale only as the hosts listed can tell: `--host a` alone cannot see that b holds a newer copy.
    const stale = staleCopies(guests);
    for (const g of guests) output.emit(guestLine(g, stale.has(g)));
    if (!output.json) {
      if (guests.length === 0) output.print(failed.length ? '' : 'no guests');
      else {
        const rows = [['NAME', 'HOST', 'STATE', 'MEMORY', 'DISK', 'DRIVER', 'NIC', 'ENCRYPTED-MIGRATION']];
        for (const g of guests)
          rows.push([
            g.name,
            g.host,
            stale.has(g) ? `${g.state} (stale)` : g.state,
            formatBytes(g.memoryBytes),
            diskBytesOf(g) ? formatBytes(diskBytesOf(g)) : '-',
            g.driver,
            g.nic,
            g.encryptedMigration,
          ]);
        for (const line of table(rows)) output.print(line);
      }
    }
    for (const [g, newer] of stale) {
      output.warn(
        `guest ${g.name} on ${g.host} is a stale copy (generation ${g.generation ?? 0}; ${newer.newerOn} holds generation ${newer.generation}): ` +
          `that host's state directory is older than the guest's last move. Remove the copy with \`ferry vm destroy ${g.name} --host ${g.host}\``,
      );
    }
    if (failed.length > 0) throw new FerryError('ERR_FERRY_NETWORK', `could not list the guests of ${failed.join(', ')}`);
  },
});
