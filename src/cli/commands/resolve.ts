/**
 * `ferry resolve VM [--to [CLUSTER_FILE:]HOST] [--destination-lost --i-have-powered-off-the-destination]`:
 * settles a migration whose source waits, paused and in doubt, for its destination's decision —
 * after a cross-cluster move lost its channel at switch-over and the `ferry migrate` that would
 * have relayed the answer is gone too, or, fenced, when the destination is gone for good. A guest
 * still migrating is followed to the end of its migration.
 */
import { checkGuestName, defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { resolveGuest, unconfirmedFence, type ResolveReport } from '../../coordinator/resolve.js';
import { resolveTarget } from '../../coordinator/target.js';

interface ResolveArgs {
  vm: string;
  to?: string;
  cluster?: string;
  'destination-lost': boolean;
  'i-have-powered-off-the-destination': boolean;
}

function summary(r: ResolveReport): string {
  if (r.settledBy === 'operator')
    return `${r.vm}: migration ${r.migrationId} recorded as not committed by operator decision; the guest runs on ${r.from} again, and ${r.to} drops its copy when it comes back`;
  if (r.settledBy === 'migration')
    return r.decision === 'committed'
      ? `${r.vm}: migration ${r.migrationId} committed; the guest runs on ${r.to}`
      : `${r.vm}: migration ${r.migrationId} ended without committing; the guest runs on ${r.from}`;
  return r.decision === 'committed'
    ? `${r.vm}: ${r.to} had committed migration ${r.migrationId}; the guest runs there, and its copy on ${r.from} stops`
    : `${r.vm}: ${r.to} did not commit migration ${r.migrationId}; the guest runs on ${r.from} again`;
}

export const resolveCommand = defineCommand<ResolveArgs>({
  command: 'resolve <vm>',
  describe: 'settle a migration left in doubt (ask its destination, or fence a lost one), or follow a running one to its end',
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('vm', { type: 'string', demandOption: true, describe: 'the guest, migrating or paused in doubt on its source host' })
      .option('to', {
        type: 'string',
        requiresArg: true,
        describe: 'where it went: HOST, or CLUSTER_FILE:HOST for another cluster (default: the host the source recorded)',
      })
      .option('destination-lost', {
        type: 'boolean',
        default: false,
        describe: 'the destination can never run the guest again: resume it on the source without its answer',
      })
      .option('i-have-powered-off-the-destination', {
        type: 'boolean',
        default: false,
        describe: 'confirms --destination-lost: you made sure the destination cannot run the guest',
      })
      .example('$0 resolve web1 --to ../west/cluster.yaml:b', 'web1 went to host b of another cluster; its source waits paused')
      .example(
        '$0 resolve web1',
        'a move inside this cluster (its source also asks by itself every few seconds); a running one is followed',
      )
      .example(
        '$0 resolve web1 --destination-lost --i-have-powered-off-the-destination',
        'host b died at switch-over and is powered off for good: web1 resumes on its source',
      )
      .epilogue(
        'Only a guest whose state is in-doubt has something to resolve; a migrating one is followed to its end. The host asked must ' +
          'be the one the source recorded (name and control address); its answer is final, and the guest then runs on exactly one host. ' +
          '--destination-lost is for a destination that will never run the guest: if it still can, the guest would run twice.',
      ),
  run: async (output, args) => {
    checkGuestName(args.vm);
    // Refused before any host is asked: the danger is the operator's to accept, knowingly.
    if (args['destination-lost'] && !args['i-have-powered-off-the-destination']) throw unconfirmedFence(args.vm);
    const cluster = await openCluster(args);
    // A bad --to is bad input: refused before any host is asked.
    const to = args.to === undefined ? undefined : await resolveTarget(cluster, args.to);
    const report = await resolveGuest({
      cluster,
      guest: args.vm,
      ...(to ? { to } : {}),
      destinationLost: args['destination-lost'],
      destinationGoneConfirmed: args['i-have-powered-off-the-destination'],
    });
    output.emit(report as unknown as Record<string, unknown>);
    output.print(summary(report));
  },
});
