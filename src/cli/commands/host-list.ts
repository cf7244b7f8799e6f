/** `ferry host list [--json]`: the hosts of the cluster file, and whether each one's agent answers. */
import { defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { formatBytes } from '../../common/units.js';
import { memoryForGuests } from '../../control/admission.js';
import { eachHost } from '../../coordinator/connect.js';
import { table } from '../table.js';

export const hostListCommand = defineCommand<{ cluster?: string }>({
  command: 'list',
  describe: 'list the hosts of the cluster file, and whether their agents answer',
  builder: (yargs) =>
    withClusterOption(yargs)
      .example('$0 host list', 'a table: each host, its addresses, whether its agent answers, its guests')
      .example('$0 host list --json', 'one {"type":"host"} object per host, then a result line'),
  run: async (output, args) => {
    const cluster = await openCluster(args);
    const names = [...cluster.hosts.keys()].sort();
    const answers = await eachHost(cluster, names, (client) => client.call('capabilities', {}));
    const rows = [['NAME', 'CONTROL', 'MIGRATION NETWORKS', 'AGENT', 'GUESTS', 'MEMORY FOR GUESTS']];
    let reachable = 0;
    for (const name of names) {
      const host = cluster.hosts.get(name)!;
      const outcome = answers.get(name)!;
      const networks = host.networks.map((n) => n.advertise);
      const line = { type: 'host', name, control: host.control, networks: host.networks };
      if (outcome.ok) {
        reachable++;
        const c = outcome.value;
        const room = memoryForGuests(c);
        output.emit({
          ...line,
          reachable: true,
          agentVersion: c.agentVersion,
          encrypts: c.encrypts,
          guests: c.guests,
          freeMemoryBytes: c.freeMemoryBytes,
          memoryReserveBytes: c.memoryReserveBytes ?? null,
          memoryForGuestsBytes: room,
          error: null,
        });
        rows.push([name, host.control, networks.join(','), `up, ferry ${c.agentVersion}`, String(c.guests), formatBytes(room)]);
      } else {
        output.emit({ ...line, reachable: false, error: outcome.error.toJSON() });
        rows.push([name, host.control, networks.join(','), 'down', '-', '-']);
        output.warn(`host ${name}: ${outcome.error.message}`);
      }
    }
    if (names.length === 0) output.print(`no hosts in ${cluster.file}: add one with \`ferry host init\``);
    else for (const l of table(rows)) output.print(l);
    output.emit({ type: 'result', ok: true, hosts: names.length, reachable, error: null });
  },
});
