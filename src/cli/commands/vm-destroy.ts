/** `ferry vm destroy NAME`: stop a guest and delete it, memory and disk. */
import { defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { connectHost } from '../../coordinator/connect.js';
import { locateGuest } from '../../coordinator/locate.js';
import { clusterHost } from '../../coordinator/cluster.js';

export const vmDestroyCommand = defineCommand<{ name: string; host?: string; cluster?: string }>({
  command: 'destroy <name>',
  describe: 'stop a guest and delete it (memory and disk)',
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('name', { type: 'string', demandOption: true, describe: 'the guest' })
      .option('host', {
        type: 'string',
        requiresArg: true,
        describe: "only this host's copy (a stale one that `vm list` names, say); without it, the copy that runs",
      })
      .example('$0 vm destroy web1', 'wherever web1 runs')
      .example('$0 vm destroy web1 --host a', 'the copy of web1 on host a (a stale one, left by a restored state directory)'),
  run: async (output, args) => {
    const cluster = await openCluster(args);
    const { host } = await locateGuest(cluster, args.name, args.host ? [clusterHost(cluster, args.host).name] : undefined);
    const client = await connectHost(cluster, host);
    try {
      await client.call('guest.destroy', { name: args.name }, { timeoutMs: 2 * 60_000 });
      output.print(`guest ${args.name} destroyed on ${host}`);
      output.emit({ type: 'result', ok: true, name: args.name, host });
    } finally {
      client.close();
    }
  },
});
