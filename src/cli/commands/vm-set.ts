/** `ferry vm set NAME --encrypted-migration MODE`: change a guest's migration encryption setting. */
import { defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError } from '../../errors.js';
import { connectHost } from '../../coordinator/connect.js';
import { locateGuest } from '../../coordinator/locate.js';
import { parseEncryptedMigration } from '../../coordinator/mode.js';

export const vmSetCommand = defineCommand<{ name: string; 'encrypted-migration': string; cluster?: string }>({
  command: 'set <name>',
  describe: "change a guest's settings",
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('name', { type: 'string', demandOption: true, describe: 'the guest' })
      .option('encrypted-migration', {
        type: 'string',
        demandOption: true,
        requiresArg: true,
        describe: 'disabled | opportunistic | required',
      })
      .example('$0 vm set db1 --encrypted-migration required', 'db1 only ever moves encrypted, and only to hosts that can'),
  run: async (output, args) => {
    let mode;
    try {
      mode = parseEncryptedMigration(args['encrypted-migration'], '--encrypted-migration');
    } catch (err) {
      throw new FerryError('ERR_FERRY_USAGE', (err as Error).message);
    }
    const cluster = await openCluster(args);
    const { host } = await locateGuest(cluster, args.name);
    const client = await connectHost(cluster, host);
    try {
      const guest = await client.call('guest.set', { name: args.name, encryptedMigration: mode });
      output.print(`guest ${guest.name} on ${guest.host}: encrypted-migration ${guest.encryptedMigration}`);
      output.emit({ type: 'result', ok: true, guest });
    } finally {
      client.close();
    }
  },
});
