/**
 * `ferry migrations [--json] [--watch]`: every running and queued migration of the cluster, as a
 * job list (virsh domjobinfo, or KubeVirt's migration objects under kubectl get). Every agent of
 * the cluster file is asked (`migration.list`); the source's view (pass, bytes, rates) and the
 * destination's (what arrived, over which network) are merged by migration id, so a migration
 * shows once even when one of its two agents does not answer. An agent that does not answer is
 * named, and the rest are listed. --watch redraws every second until Ctrl-C or a closed pipe.
 */
import { defineCommand, ReportedFailure } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError } from '../../errors.js';
import { formatBytes, formatDuration } from '../../common/units.js';
import type { MigrationJob, MigrationList } from '../../control/protocol.js';
import type { Cluster } from '../../coordinator/cluster.js';
import { eachHost } from '../../coordinator/connect.js';
import type { Output } from '../output.js';
import { table } from '../table.js';

/** What `--json` prints per migration (docs/operations.md, "ferry migrations"): both sides' views in one. */
export interface MigrationRow {
  type: 'migration';
  migrationId: string;
  guest: string;
  from: string;
  to: string;
  phase: MigrationJob['phase'];
  /** Where it waits for a slot, and its place there (1: next); null once it runs. */
  queue: { host: string; position: number } | null;
  pass: number | null;
  bytesSent: number | null;
  bytesLeft: number | null;
  bytesReceived: number | null;
  rate: number | null;
  dirtyRate: number | null;
  throttlePercent: number | null;
  etaMs: number | null;
  expectedDowntimeMs: number | null;
  network: string | null;
  failovers: number;
  mode: MigrationJob['mode'];
  maxBytesPerSecond: number | null;
  /** When the first of its agents got it, ms since the epoch. */
  since: number;
  /** Which sides answered for it: a side missing here was unreachable or has not started it yet. */
  seenBy: MigrationJob['role'][];
}

export interface Unreachable {
  host: string;
  error: FerryError;
}

export interface MigrationsSnapshot {
  rows: MigrationRow[];
  unreachable: Unreachable[];
}

/** A call to an agent that does not answer within this is given up for this listing. */
const LIST_TIMEOUT_MS = 5_000;
const WATCH_INTERVAL_MS = 1_000;
/** The table fits a terminal this wide; longer names and addresses are shortened (--json has them whole). */
export const TABLE_COLUMNS = 120;

/** One row per migration id: the source's figures where it answered, the destination's otherwise. */
export function mergeJobs(lists: readonly MigrationList[]): MigrationRow[] {
  const sides = new Map<string, { source?: MigrationJob; destination?: MigrationJob }>();
  for (const list of lists)
    for (const job of list.migrations) {
      const entry = sides.get(job.migrationId) ?? {};
      entry[job.role] = job;
      sides.set(job.migrationId, entry);
    }
  const rows: MigrationRow[] = [];
  for (const [migrationId, { source: src, destination: dst }] of sides) {
    const any = (src ?? dst)!;
    const queuedAt = src?.phase === 'queued' ? src : !src && dst?.phase === 'queued' ? dst : null;
    rows.push({
      type: 'migration',
      migrationId,
      guest: any.guest,
      from: src?.host ?? dst!.peer,
      to: dst?.host ?? src!.peer,
      phase: (src ?? dst)!.phase,
      queue: queuedAt && queuedAt.position !== null ? { host: queuedAt.host, position: queuedAt.position } : null,
      pass: src?.pass ?? null,
      bytesSent: src?.bytesSent ?? null,
      bytesLeft: src?.bytesLeft ?? null,
      bytesReceived: dst?.bytesReceived ?? null,
      rate: src?.rate ?? null,
      dirtyRate: src?.dirtyRate ?? null,
      throttlePercent: src?.throttlePercent ?? null,
      etaMs: src?.etaMs ?? null,
      expectedDowntimeMs: src?.expectedDowntimeMs ?? null,
      network: src?.network ?? dst?.network ?? null,
      failovers: Math.max(src?.failovers ?? 0, dst?.failovers ?? 0),
      mode: src?.mode ?? dst?.mode ?? null,
      maxBytesPerSecond: src?.maxBytesPerSecond ?? dst?.maxBytesPerSecond ?? null,
      since: Math.min(src?.since ?? Infinity, dst?.since ?? Infinity),
      seenBy: [...(src ? ['source' as const] : []), ...(dst ? ['destination' as const] : [])],
    });
  }
  return rows.sort((a, b) => a.since - b.since || a.guest.localeCompare(b.guest));
}

/** Asks every agent of the cluster at once; one that does not answer is reported, not fatal. */
export async function listMigrations(cluster: Cluster): Promise<MigrationsSnapshot> {
  const answers = await eachHost(cluster, [...cluster.hosts.keys()], (client) =>
    client.call('migration.list', {}, { timeoutMs: LIST_TIMEOUT_MS }),
  );
  const lists: MigrationList[] = [];
  const unreachable: Unreachable[] = [];
  for (const [host, answer] of answers) {
    if (answer.ok) lists.push(answer.value);
    else unreachable.push({ host, error: answer.error });
  }
  return { rows: mergeJobs(lists), unreachable };
}

function phaseText(r: MigrationRow): string {
  if (r.queue) return `queued #${r.queue.position} at ${r.queue.host}`;
  return r.phase === 'ready-to-commit' ? 'committing' : r.phase;
}

const dash = <T>(v: T | null, f: (v: T) => string): string => (v === null ? '-' : f(v));
const rate = (v: number) => `${formatBytes(Math.round(v))}/s`;

/** Cuts `text` to `width` characters, the last one an ellipsis. */
function cut(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 1)}…`;
}

/** The table for people, at most TABLE_COLUMNS wide: the guest, host and network columns give way first. */
export function migrationsTable(rows: readonly MigrationRow[]): string[] {
  const header = ['GUEST', 'FROM', 'TO', 'PHASE', 'PASS', 'SENT', 'LEFT', 'RATE', 'DIRTY', 'ETA', 'NETWORK', 'FAILOVERS'];
  const cells = rows.map((r) => [
    r.guest,
    r.from,
    r.to,
    phaseText(r),
    dash(r.pass, String),
    dash(r.bytesSent ?? r.bytesReceived, formatBytes),
    dash(r.bytesLeft, formatBytes),
    dash(r.rate, rate),
    dash(r.dirtyRate, rate),
    dash(r.etaMs, formatDuration),
    r.network ?? '-',
    String(r.failovers),
  ]);
  const all = [header, ...cells];
  const widths = header.map((_, i) => Math.max(...all.map((row) => row[i]!.length)));
  // The guest, the network, the hosts and a queue's host give way; the figures and the queue place never do.
  const PHASE = 3;
  const QUEUED = /^queued #\d+ at /;
  const min = (i: number) =>
    i === PHASE ? Math.max(header[i]!.length, ...all.map((row) => (QUEUED.exec(row[i]!)?.[0].length ?? 0) + 2)) : 5;
  const flexible = [0, 10, 1, 2, PHASE];
  const total = () => widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1);
  while (total() > TABLE_COLUMNS) {
    const widest = flexible.filter((i) => widths[i]! > min(i)).sort((a, b) => widths[b]! - widths[a]!)[0];
    if (widest === undefined) break;
    widths[widest]!--;
  }
  const fit = (c: string, i: number): string => {
    const queued = i === PHASE ? QUEUED.exec(c)?.[0] : undefined;
    return queued ? queued + cut(c.slice(queued.length), widths[i]! - queued.length) : cut(c, widths[i]!);
  };
  return table(all.map((row) => row.map(fit)));
}

function reportUnreachable(output: Output, unreachable: readonly Unreachable[]): void {
  for (const u of unreachable) output.emit({ type: 'unreachable', host: u.host, error: u.error.toJSON() });
}

function unreachableError(unreachable: readonly Unreachable[]): FerryError {
  return new FerryError(
    'ERR_FERRY_NETWORK',
    `could not list the migrations of ${unreachable.map((u) => u.host).join(', ')}: those hosts' migrations may be missing above`,
  );
}

/** One listing: the table or JSON lines; exit 1 (after the rest was printed) when an agent did not answer. */
async function listOnce(output: Output, cluster: Cluster): Promise<void> {
  const { rows, unreachable } = await listMigrations(cluster);
  for (const r of rows) output.emit({ ...r });
  reportUnreachable(output, unreachable);
  if (!output.json) {
    for (const u of unreachable) output.warn(`host ${u.host}: ${u.error.message}`);
    if (rows.length === 0) output.print('no migrations running or queued');
    else for (const line of migrationsTable(rows)) output.print(line);
  }
  const failure = unreachable.length > 0 ? unreachableError(unreachable) : null;
  output.emit({
    type: 'result',
    ok: failure === null,
    migrations: rows.length,
    unreachable: unreachable.map((u) => u.host),
    error: failure?.toJSON() ?? null,
  });
  if (failure) throw new ReportedFailure(failure.code, failure.message);
}

/** Redraws every second until Ctrl-C (exit 0) or until stdout's reader goes away (quietly). */
async function watch(output: Output, cluster: Cluster): Promise<void> {
  let stopped = false;
  let wake = (): void => {};
  const onSigint = (): void => {
    stopped = true;
    wake();
  };
  process.on('SIGINT', onSigint);
  let snapshots = 0;
  try {
    while (!stopped && !output.stdoutClosed) {
      const started = performance.now();
      const { rows, unreachable } = await listMigrations(cluster);
      if (stopped || output.stdoutClosed) break;
      snapshots++;
      const at = new Date().toISOString();
      for (const r of rows) output.emit({ ...r });
      reportUnreachable(output, unreachable);
      output.emit({ type: 'snapshot', at, migrations: rows.length, unreachable: unreachable.map((u) => u.host) });
      if (!output.json) {
        if (output.stdoutIsTerminal) output.text('\x1b[H\x1b[2J');
        else if (snapshots > 1) output.print();
        output.print(`ferry migrations, every ${WATCH_INTERVAL_MS / 1000} s (Ctrl-C to stop)  ${at}`);
        if (rows.length === 0) output.print('no migrations running or queued');
        else for (const line of migrationsTable(rows)) output.print(line);
        for (const u of unreachable) output.print(`host ${u.host} did not answer: ${u.error.message}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, WATCH_INTERVAL_MS - (performance.now() - started)));
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    process.off('SIGINT', onSigint);
  }
  output.emit({ type: 'result', ok: true, snapshots, error: null });
}

export const migrationsCommand = defineCommand<{ watch: boolean; cluster?: string }>({
  command: 'migrations',
  describe: 'list every running and queued migration of the cluster; --watch redraws every second',
  builder: (yargs) =>
    withClusterOption(yargs)
      .option('watch', { alias: 'w', type: 'boolean', default: false, describe: 'redraw every second until Ctrl-C' })
      .example('$0 migrations', 'a table: guest, from, to, phase, pass, bytes sent and left, rates, ETA, network, failovers')
      .example('$0 migrations --watch', 'the same, redrawn every second')
      .example('$0 migrations --json', 'one JSON object per migration, then a result line')
      .epilogue(
        `Every agent of the cluster file is asked; each migration shows once, both of its agents' views merged. The table fits ${TABLE_COLUMNS} columns. Exit status: 0 listed (with --watch: stopped by Ctrl-C or a closed pipe), 1 an agent did not answer (the others' migrations are listed), 2 bad usage or a bad cluster file.`,
      ),
  run: async (output, args) => {
    const cluster = await openCluster(args);
    if (args.watch) await watch(output, cluster);
    else await listOnce(output, cluster);
  },
});
