/**
 * `ferry host remove NAME [--force]`: takes a host out of the cluster file, refused while its agent
 * says it has guests (or cannot be asked, without --force). Its agent and state directory are the
 * host's: they stay until the operator stops and removes them there.
 */
import { defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError, toFerryError } from '../../errors.js';
import { HOST_NAME } from '../../common/names.js';
import { clusterHost, removeClusterHost } from '../../coordinator/cluster.js';
import { connectHost } from '../../coordinator/connect.js';

export const hostRemoveCommand = defineCommand<{ name: string; force: boolean; cluster?: string }>({
  command: 'remove <name>',
  describe: 'take a host out of the cluster file (refused while it has guests)',
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('name', { type: 'string', demandOption: true, describe: 'the host' })
      .option('force', {
        type: 'boolean',
        default: false,
        describe: 'remove it though its agent cannot be asked (the host is gone for good); never while it answers with guests',
      })
      .example('$0 evacuate c && $0 host remove c', 'move its guests away, then take it out')
      .example('$0 host remove c --force', 'a host whose machine is gone'),
  run: async (output, args) => {
    if (!HOST_NAME.test(args.name)) throw new FerryError('ERR_FERRY_USAGE', `"${args.name}" is not a host name`);
    const cluster = await openCluster(args);
    clusterHost(cluster, args.name);
    let guests: string[] | null = null;
    try {
      const client = await connectHost(cluster, args.name);
      try {
        guests = (await client.call('guest.list', {})).guests.map((g) => g.name);
      } finally {
        client.close();
      }
    } catch (err) {
      const e = toFerryError(err);
      if (!args.force) {
        throw new FerryError(
          'ERR_FERRY_REFUSED',
          `cannot ask host ${args.name} whether it has guests (${e.message}): start its agent, or pass --force if the host is gone for good; nothing was removed`,
        );
      }
      output.warn(`host ${args.name} could not be asked whether it has guests (${e.message}); removing it anyway (--force)`);
    }
    if (guests !== null && guests.length > 0) {
      const shown = guests.slice(0, 5).join(', ') + (guests.length > 5 ? `, and ${guests.length - 5} more` : '');
      throw new FerryError(
        'ERR_FERRY_REFUSED',
        `host ${args.name} has ${guests.length} guest${guests.length === 1 ? '' : 's'} (${shown}): move them (ferry evacuate ${args.name}) or destroy them first; nothing was removed`,
      );
    }
    await removeClusterHost(cluster.file, args.name);
    output.print(
      `host ${args.name} removed from ${cluster.file}; its agent and state directory stay on the host until you stop and remove them there`,
    );
    output.emit({ type: 'result', ok: true, host: args.name, file: cluster.file, checked: guests !== null, error: null });
  },
});
