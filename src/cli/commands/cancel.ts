/**
 * `ferry cancel VM`: cancel the migration of a guest, started from another shell (or by a
 * `ferry migrate` that is gone). The host that runs the guest stops it: a queued migration leaves
 * the queue, pre-copy stops with the guest running on where it was, and the destination drops its
 * copy. Refused from the switch-over on (the destination decides, and it ends by itself).
 * Exit 0 cancelled, 1 nothing to cancel or it cannot be cancelled now, 2 bad input.
 */
import { checkGuestName, defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { connectHost } from '../../coordinator/connect.js';
import { locateGuest } from '../../coordinator/locate.js';
import { FerryError } from '../../errors.js';

/** The agent answers once the migration has ended: the engine stops at its next message. */
const CANCEL_TIMEOUT_MS = 3 * 60_000;

export const cancelCommand = defineCommand<{ vm: string; cluster?: string }>({
  command: 'cancel <vm>',
  describe: "cancel a guest's migration: before switch-over the guest stays where it runs",
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('vm', { type: 'string', demandOption: true, describe: 'the guest whose migration to cancel' })
      .example('$0 cancel web1', "stop web1's migration; web1 keeps running on its host")
      .example('$0 cancel web1 --json', 'the same, with a JSON result line')
      .epilogue(
        'Exit status: 0 cancelled, 1 no migration to cancel or past the point of cancelling (switch-over under way or in doubt: the destination decides), 2 bad input.',
      ),
  run: async (output, args) => {
    checkGuestName(args.vm);
    const cluster = await openCluster(args);
    const { host } = await locateGuest(cluster, args.vm);
    const client = await connectHost(cluster, host);
    try {
      const r = await client.call('migration.cancel', { guest: args.vm }, { timeoutMs: CANCEL_TIMEOUT_MS });
      if (r.outcome !== 'aborted') {
        throw new FerryError(
          'ERR_FERRY_REFUSED',
          `migration ${r.migrationId} of guest "${args.vm}" was past the point of cancelling: it ended ${r.outcome}`,
        );
      }
      output.print(`migration of ${args.vm} to ${r.to} cancelled: ${args.vm} runs on ${host}`);
      output.emit({ type: 'result', ok: true, vm: args.vm, host, to: r.to, migrationId: r.migrationId, outcome: r.outcome, error: null });
    } finally {
      client.close();
    }
  },
});
