/**
 * `ferry resolve VM [--to [CLUSTER_FILE:]HOST]`: settles a migration whose source waits, paused and
 * in doubt, for its destination's decision — after a cross-cluster move lost its channel at
 * switch-over and the `ferry migrate` that would have relayed the answer is gone too.
 */
import { checkGuestName, defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { resolveGuest } from '../../coordinator/resolve.js';
import { resolveTarget } from '../../coordinator/target.js';

export const resolveCommand = defineCommand<{ vm: string; to?: string; cluster?: string }>({
  command: 'resolve <vm>',
  describe: 'settle a migration left in doubt: ask its destination what it decided and tell the source',
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('vm', { type: 'string', demandOption: true, describe: 'the guest, paused in doubt on its source host' })
      .option('to', {
        type: 'string',
        requiresArg: true,
        describe: 'where it went: HOST, or CLUSTER_FILE:HOST for another cluster (default: the host the source recorded)',
      })
      .example('$0 resolve web1 --to ../west/cluster.yaml:b', 'web1 went to host b of another cluster; its source waits paused')
      .example('$0 resolve web1', 'a move inside this cluster (its source also asks by itself every few seconds)')
      .epilogue(
        'Only a guest whose state is in-doubt has something to resolve. The host asked must be the one the source ' +
          'recorded (name and control address); its answer is final, and the guest then runs on exactly one host.',
      ),
  run: async (output, args) => {
    checkGuestName(args.vm);
    const cluster = await openCluster(args);
    // A bad --to is bad input: refused before any host is asked.
    const to = args.to === undefined ? undefined : await resolveTarget(cluster, args.to);
    const report = await resolveGuest({ cluster, guest: args.vm, ...(to ? { to } : {}) });
    output.emit(report as unknown as Record<string, unknown>);
    output.print(
      report.decision === 'committed'
        ? `${report.vm}: ${report.to} had committed migration ${report.migrationId}; the guest runs there, and its copy on ${report.from} stops`
        : `${report.vm}: ${report.to} did not commit migration ${report.migrationId}; the guest runs on ${report.from} again`,
    );
  },
});
