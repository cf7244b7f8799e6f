/** `ferry vm destroy NAME`: stop a guest and delete it, memory and disk. */
import { defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { connectHost } from '../../coordinator/connect.js';
import { locateGuest } from '../../coordinator/locate.js';

export const vmDestroyCommand = defineCommand<{ name: string; cluster?: string }>({
  command: 'destroy <name>',
  describe: 'stop a guest and delete it (memory and disk)',
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('name', { type: 'string', demandOption: true, describe: 'the guest' })
      .example('$0 vm destroy web1', 'wherever web1 runs'),
  run: async (output, args) => {
    const cluster = await openCluster(args);
    const { host } = await locateGuest(cluster, args.name);
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
