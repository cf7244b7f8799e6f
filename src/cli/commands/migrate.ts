/**
 * `ferry migrate VM --to HOST`: one live migration, with progress, a summary, and with --json
 * events then exactly one result line. Exit 0 moved, 1 failed (the guest runs on the source),
 * cancelled (the first Ctrl-C) or no longer followed (the second), 2 bad usage or input.
 */
import type { Argv } from 'yargs';
import { checkGuestName, defineCommand, ReportedFailure } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError, toFerryError } from '../../errors.js';
import { parseDuration, parseRate } from '../../common/units.js';
import { parseEncryptedMigration } from '../../coordinator/mode.js';
import {
  DEFAULT_STREAMS,
  migrateGuest,
  preflightReport,
  type CoordinatorEvent,
  type MigrateHooks,
  type MigrateRequest,
} from '../../coordinator/migrate.js';
import { resolveTarget } from '../../coordinator/target.js';
import type { EncryptedMigration } from '../../guest/types.js';
import { MigrationProgress } from '../progress.js';
import { summaryLines } from '../migration-summary.js';
import type { Output } from '../output.js';

interface MigrateArgs {
  vm: string;
  to: string;
  mode?: string;
  streams: number;
  'max-downtime'?: string;
  bandwidth?: string;
  timeout?: string;
  verify: boolean;
  'remove-source-disks': boolean;
  cluster?: string;
}

/** The flags of one migration that `migrate` and `evacuate` share (evacuate applies them to each). */
export function withMigrationFlags<T>(yargs: Argv<T>) {
  return yargs
    .option('mode', {
      type: 'string',
      requiresArg: true,
      describe: "encryption: disabled | opportunistic | required (default: the guest's setting)",
    })
    .option('streams', { type: 'number', default: DEFAULT_STREAMS, requiresArg: true, describe: 'TCP streams of the data channel (1-16)' })
    .option('max-downtime', { type: 'string', requiresArg: true, describe: 'switch over when the pause fits this (default 500ms)' })
    .option('bandwidth', { type: 'string', requiresArg: true, describe: 'cap the data rate: 10Gbit, 500MB' })
    .option('timeout', {
      type: 'string',
      requiresArg: true,
      describe: 'give up pre-copy after this long (default 10m); the guest stays on the source',
    });
}

/** Options as the coordinator takes them, checked before any host is asked (exit 2 when wrong). */
export function migrationOptions(args: { mode?: string; streams?: number; 'max-downtime'?: string; bandwidth?: string; timeout?: string }) {
  const usage = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      throw new FerryError('ERR_FERRY_USAGE', (err as Error).message);
    }
  };
  const streams = args.streams ?? DEFAULT_STREAMS;
  if (!Number.isSafeInteger(streams) || streams < 1 || streams > 16)
    throw new FerryError('ERR_FERRY_USAGE', `--streams: ${args.streams} is not a whole number from 1 to 16`);
  const positive = (value: number, option: string) => {
    if (value < 1) throw new FerryError('ERR_FERRY_USAGE', `${option}: must be more than 0`);
    return value;
  };
  const out: Omit<MigrateRequest, 'guest' | 'cluster' | 'to'> = { streams };
  if (args.mode !== undefined) out.mode = usage(() => parseEncryptedMigration(args.mode!, '--mode')) as EncryptedMigration;
  if (args['max-downtime'] !== undefined)
    out.maxDowntimeMs = positive(
      usage(() => parseDuration(args['max-downtime']!, '--max-downtime')),
      '--max-downtime',
    );
  if (args.bandwidth !== undefined)
    out.maxBytesPerSecond = positive(
      usage(() => parseRate(args.bandwidth!, '--bandwidth')),
      '--bandwidth',
    );
  if (args.timeout !== undefined)
    out.timeoutMs = positive(
      usage(() => parseDuration(args.timeout!, '--timeout')),
      '--timeout',
    );
  return out;
}

/** Runs one migration with progress and the summary: what `migrate` and `demo` share. */
export async function migrateWithProgress(
  output: Output,
  request: MigrateRequest,
  hooks: Omit<MigrateHooks, 'onEvent'> = {},
): Promise<void> {
  const progress = new MigrationProgress(output, [request.guest]);
  const vm = request.guest;
  const onCancel = () =>
    progress.notice(`cancelling the migration of ${vm}; waiting for it to end (Ctrl-C again to stop waiting: it would carry on by itself)`);
  const onDetach = () =>
    progress.notice(`no longer following the migration of ${vm}: it carries on by itself; \`ferry vm list\` shows where ${vm} ends up`);
  hooks.cancel?.addEventListener('abort', onCancel, { once: true });
  hooks.detach?.addEventListener('abort', onDetach, { once: true });
  let summary;
  try {
    const onEvent = (e: CoordinatorEvent) => {
      if (e.type === 'reconnecting' && e.attempt === 1)
        progress.notice(`lost host ${e.host}'s agent (${e.error}); reaching it again to follow the migration of ${vm} to its end`);
      progress.event(e);
    };
    summary = await migrateGuest(request, { ...hooks, onEvent });
    // The reason is said once, in the error line at the end.
    progress.finish(request.guest, summary.report.ok, summary.report.ok ? 'moved' : 'did not move');
  } catch (err) {
    // Refused before it started: the same result line (nulls where nothing is known), then the error.
    const report = preflightReport(request, err);
    output.emit(report);
    throw new ReportedFailure(report.error!.code as FerryError['code'], report.error!.message, { cause: err });
  } finally {
    hooks.cancel?.removeEventListener('abort', onCancel);
    hooks.detach?.removeEventListener('abort', onDetach);
    progress.stop();
  }
  output.emit(summary.report as unknown as Record<string, unknown>);
  for (const line of summaryLines(summary)) output.print(line);
  if (!summary.report.ok) {
    const e = summary.report.error!;
    throw new ReportedFailure(toFerryError(e, 'ERR_FERRY_ABORTED').code, `${vm} did not move: ${e.message}`);
  }
}

/**
 * The operator's Ctrl-C while `run` goes: the first aborts `cancel` (cancel the migration and wait
 * for its result), the second `detach` (stop waiting at once; the migration carries on).
 */
export async function withInterrupts<T>(run: (signals: { cancel: AbortSignal; detach: AbortSignal }) => Promise<T>): Promise<T> {
  const cancel = new AbortController();
  const detach = new AbortController();
  const onSigint = () => (cancel.signal.aborted ? detach.abort() : cancel.abort());
  process.on('SIGINT', onSigint);
  try {
    return await run({ cancel: cancel.signal, detach: detach.signal });
  } finally {
    process.off('SIGINT', onSigint);
  }
}

export const migrateCommand = defineCommand<MigrateArgs>({
  command: 'migrate <vm>',
  describe: 'move a running guest to another host, live, encrypted per its setting',
  builder: (yargs) =>
    withMigrationFlags(withClusterOption(yargs))
      .positional('vm', { type: 'string', demandOption: true, describe: 'the guest to move' })
      .option('to', {
        type: 'string',
        demandOption: true,
        requiresArg: true,
        describe: 'the destination: HOST, or CLUSTER_FILE:HOST for a host of another cluster',
      })
      .option('verify', {
        type: 'boolean',
        default: false,
        describe: 'compare memory (and QEMU disk) digests of source and destination before committing',
      })
      .option('remove-source-disks', {
        type: 'boolean',
        default: false,
        describe: "qemu: after the commit, delete the guest's images at the source (default: kept, the result says where)",
      })
      .example('$0 migrate web1 --to b', "move web1 to host b, encrypted unless web1's setting says otherwise")
      .example(
        '$0 migrate db1 --to b --mode required --max-downtime 100ms --verify',
        'never in plain text; a short pause; digests compared',
      )
      .example('$0 migrate web1 --to ../west/cluster.yaml:w1 --json', 'to host w1 of another cluster; JSON events and a result line')
      .epilogue(
        'Ctrl-C once: cancel (before switch-over the guest stays on the source; exit 1 with the result). Ctrl-C twice: stop waiting; the migration carries on by itself. `ferry cancel VM` cancels from another shell.',
      ),
  run: async (output, args) => {
    checkGuestName(args.vm);
    const options = migrationOptions(args);
    const cluster = await openCluster(args);
    const to = await resolveTarget(cluster, args.to);
    await withInterrupts((signals) =>
      migrateWithProgress(
        output,
        { guest: args.vm, cluster, to, ...options, verify: args.verify, removeSourceDisks: args['remove-source-disks'] },
        signals,
      ),
    );
  },
});
