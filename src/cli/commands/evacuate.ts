/**
 * `ferry evacuate HOST`: every guest off a host, at most N at once, the rest shown as queued.
 * --dry-run prints the plan and changes nothing. Exit 1 when any guest could not be moved (those
 * still run on HOST).
 */
import { defineCommand, ReportedFailure } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError } from '../../errors.js';
import { formatDuration } from '../../common/units.js';
import { planHostEvacuation, runEvacuation, type EvacuationOutcome, type EvacuationPlan } from '../../coordinator/evacuate.js';
import { MigrationProgress } from '../progress.js';
import { table } from '../table.js';
import type { Output } from '../output.js';
import { migrationOptions, withMigrationFlags } from './migrate.js';

interface EvacuateArgs {
  host: string;
  to?: string;
  concurrency: number;
  mode?: string;
  streams: number;
  'max-downtime'?: string;
  bandwidth?: string;
  timeout?: string;
  'dry-run': boolean;
  cluster?: string;
}

function showPlan(output: Output, plan: EvacuationPlan): void {
  for (const u of plan.unreachable) output.warn(`host ${u.host} left out of the plan: ${u.error}`);
  for (const p of plan.placements) {
    output.emit(
      p.to === null
        ? { type: 'plan', vm: p.guest, to: null, reason: p.reason }
        : { type: 'plan', vm: p.guest, to: p.to, mode: p.mode, nicFallback: p.nicFallback, warning: p.warning ?? null },
    );
  }
  if (output.json) return;
  if (plan.placements.length === 0) {
    output.print(`host ${plan.host} has no guests`);
    return;
  }
  const rows = [['GUEST', 'TO', 'MODE', 'NOTE']];
  for (const p of plan.placements) {
    if (p.to === null) rows.push([p.guest, '-', '-', `stays: ${p.reason}`]);
    else rows.push([p.guest, p.to, p.mode, [p.nicFallback ? 'passthrough NIC -> virtio' : '', p.warning ?? ''].filter(Boolean).join('; ')]);
  }
  for (const line of table(rows)) output.print(line);
}

function showOutcomes(output: Output, host: string, outcomes: EvacuationOutcome[]): void {
  const moved = outcomes.filter((o) => o.error === null);
  output.emit({
    type: 'result',
    ok: moved.length === outcomes.length,
    host,
    dryRun: false,
    moved: moved.length,
    failed: outcomes.length - moved.length,
    guests: outcomes.map((o) => ({ vm: o.vm, to: o.to, ok: o.error === null, result: o.summary?.report ?? null, error: o.error })),
  });
  if (output.json) return;
  const rows = [['GUEST', 'TO', 'RESULT', 'MODE', 'TIME', 'DOWNTIME', 'NOTE']];
  for (const o of outcomes) {
    const r = o.summary?.report;
    rows.push([
      o.vm,
      o.to ?? '-',
      o.error === null ? 'moved' : `stays on ${host}`,
      r?.mode ?? '-',
      r ? formatDuration(r.totalMs) : '-',
      r?.switchoverMs != null ? formatDuration(r.switchoverMs) : '-',
      o.error
        ? o.error.message
        : [o.summary?.report.nicFallback ? 'passthrough NIC -> virtio' : '', o.summary?.warning ?? ''].filter(Boolean).join('; '),
    ]);
  }
  for (const line of table(rows)) output.print(line);
  output.print(`${moved.length} of ${outcomes.length} guests moved off ${host}`);
}

export const evacuateCommand = defineCommand<EvacuateArgs>({
  command: 'evacuate <host>',
  describe: 'move every guest off a host (placement by free memory and capability)',
  builder: (yargs) =>
    withMigrationFlags(withClusterOption(yargs))
      .positional('host', { type: 'string', demandOption: true, describe: 'the host to empty' })
      .option('to', { type: 'string', requiresArg: true, describe: 'only these hosts: H1,H2 (default: every other host)' })
      .option('concurrency', {
        type: 'number',
        default: 2,
        requiresArg: true,
        describe: 'migrations at once (1-64); the rest wait, shown as queued',
      })
      .option('dry-run', { type: 'boolean', default: false, describe: 'print the plan; change nothing' })
      .example('$0 evacuate a --dry-run', 'where each guest of host a would go, and why some cannot')
      .example('$0 evacuate a --to b,c --concurrency 4', 'empty host a onto b and c, four migrations at a time')
      .example('$0 evacuate a --json', 'JSON events (plan, begin, progress, end) and a result line'),
  run: async (output, args) => {
    const concurrency = args.concurrency;
    if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > 64) {
      throw new FerryError('ERR_FERRY_USAGE', `--concurrency: ${args.concurrency} is not a whole number from 1 to 64`);
    }
    const options = migrationOptions(args);
    const to = args.to === undefined ? null : args.to.split(',').map((s) => s.trim());
    if (to?.some((h) => h === '')) throw new FerryError('ERR_FERRY_USAGE', `--to: "${args.to}" is not a list of hosts H1,H2`);
    const cluster = await openCluster(args);
    const plan = await planHostEvacuation(cluster, args.host, to, options.mode);
    const stuck = plan.placements.filter((p) => p.to === null).length;
    if (args['dry-run']) {
      showPlan(output, plan);
      output.emit({
        type: 'result',
        ok: stuck === 0,
        host: args.host,
        dryRun: true,
        placed: plan.placements.length - stuck,
        unplaced: stuck,
      });
      if (stuck > 0)
        throw new ReportedFailure('ERR_FERRY_REFUSED', `${stuck} guest(s) of ${args.host} have no place to go (dry run: nothing changed)`);
      return;
    }
    showPlan(output, plan);
    const progress = new MigrationProgress(
      output,
      plan.placements.filter((p) => p.to !== null).map((p) => p.guest),
      true,
    );
    let outcomes: EvacuationOutcome[];
    try {
      outcomes = await runEvacuation(cluster, plan, concurrency, options, {
        onEvent: (e) => {
          if (e.type === 'begin') {
            if (output.json) output.emit(e);
          } else if (e.type === 'end') {
            if (output.json) output.emit({ ...e });
            else progress.finish(e.vm, e.ok, e.ok ? 'moved' : 'did not move (the table at the end says why)');
          } else progress.event(e);
        },
      });
    } finally {
      progress.stop();
    }
    showOutcomes(output, args.host, outcomes);
    const failed = outcomes.filter((o) => o.error !== null).length;
    if (failed > 0)
      throw new ReportedFailure(
        'ERR_FERRY_ABORTED',
        `${failed} of ${outcomes.length} guests could not be moved off ${args.host}; they still run there`,
      );
  },
});
