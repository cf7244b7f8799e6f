/**
 * The commit rule, both sides of it, as the agents keep it. The guest processes carry the data and
 * wait; these functions are the only places where an agent records a decision, lets an incoming
 * guest run (`commit()`), or resumes a source guest after its pause (`resumeAfterAbort()`).
 * The argument that exactly one host runs the guest: docs/migration.md, "Commit: exactly one host
 * runs the guest"; the records: docs/operations.md, "The resolve query and the commit record".
 *
 * The destination decides. Its decision record (`ownership/ID.decision.json`, created with link(2)
 * so that of two racing writers exactly one wins, fsync'd before anyone is told) is the ownership
 * record:
 * - ready to commit, its guest process still there: it records "committed", and only then lets the
 *   guest run here (a guest process gone before the record is "not committed");
 * - asked by the source (a resolve query), giving up, or restarted with no record: it records
 *   "not committed", final — a later commit finds it and drops the guest instead;
 * - whichever was recorded first stands.
 *
 * The source obeys. From the switch-over its guest is paused, and only the destination's decision
 * moves it:
 * - "committed" (COMMITTED over the channel, or the destination's agent's answer): record the
 *   hand-off, let this copy go;
 * - "not committed" (the destination's agent's answer): resume the guest here;
 * - in doubt (the channel lost after COMPLETE): ask until the destination's agent answers; the
 *   guest stays paused meanwhile, however long that takes.
 */
import type { GuestClient, MigrationInfo } from '../guest/index.js';
import type { MigrationStreamEvent, ResolveDecision } from '../control/protocol.js';
import type { IncomingMigration, MigrationHost, OutgoingMigration } from './migration-records.js';
import type { ResolveQueries } from './resolve-query.js';
import { crashPoint } from './crash-point.js';
import { processAlive } from '../common/process.js';

/** How long an incoming guest process ready to commit may take to say it still is. */
const READY_CHECK_TIMEOUT_MS = 5_000;

type Host = Pick<MigrationHost, 'state' | 'guests' | 'log'>;

// ---- the destination decides ----------------------------------------------------------------

/** The incoming guest process is ready to commit: ownership recorded, then the guest runs; or a "not committed" that came first stands. */
export async function commitOrDrop(host: Host, m: IncomingMigration, client: GuestClient): Promise<void> {
  const { migrationId, guest } = m;
  m.phase = 'ready-to-commit';
  crashPoint('destination:before-commit-record');
  if (!(await stillReady(client))) {
    // Gone (killed, crashed) since it said it was ready: the source's paused copy is the only one
    // left, so this host must not record a commit it could never run. "Not committed" is always
    // safe before the record; the source resumes once it asks.
    const decision = await decideNotCommitted(host, migrationId, guest);
    if (decision === 'not-committed') {
      m.phase = 'aborted';
      await host.guests.forget(guest).catch((err) => host.log.warn('could not remove the lost incoming guest', { guest, err }));
    }
    host.log.error('the incoming guest process is gone before the commit: not committed', { migrationId, guest, decision });
    return;
  }
  let decision: ResolveDecision;
  try {
    decision = await host.state.decide(migrationId, guest, 'committed');
  } catch (err) {
    await cannotRecord(host, m, client, err);
    return;
  }
  crashPoint('destination:after-commit-record');
  if (decision === 'committed') {
    // Durable before the guest runs: ownership first, then resume (which answers COMMITTED).
    await host.guests.commitIncoming(guest);
    const final = await client.commit();
    m.phase = 'committed';
    m.result = final.result;
    host.log.info('incoming migration committed', { migrationId, guest });
    return;
  }
  // A resolve query answered "not committed" first: that answer stands.
  const final = await client.abort().catch(() => null);
  m.phase = 'aborted';
  m.result = final?.result ?? null;
  await host.guests.forget(guest);
  host.log.warn('incoming migration not committed: the source was told so first', { migrationId, guest });
}

/** The incoming guest process still lives and still says it is ready to commit (a few seconds at most to answer). */
async function stillReady(client: GuestClient): Promise<boolean> {
  if (client.pid > 0 && !processAlive(client.pid)) return false;
  const info = await client.request('migration', {}, { timeoutMs: READY_CHECK_TIMEOUT_MS }).catch(() => null);
  return info?.phase === 'ready-to-commit';
}

/**
 * The ownership record cannot be written (disk full, a read-only state directory): the guest must
 * not run here, and "not committed" cannot be recorded either. The incoming guest process is told
 * to abort — it sends the source an ABORT, which means "not committed, and never will be", and
 * exits with the only copy of the guest's state here — so the source resumes at once instead of
 * waiting in doubt for an answer this host cannot record. Nothing is left that could commit later.
 */
async function cannotRecord(host: Host, m: IncomingMigration, client: GuestClient, err: unknown): Promise<void> {
  host.log.error('cannot record the commit decision: the incoming guest is aborted', { migrationId: m.migrationId, guest: m.guest, err });
  const final = await client.abort().catch(() => null);
  m.phase = 'aborted';
  m.result = final?.result ?? null;
  await host.guests.forget(m.guest).catch((e) => host.log.warn('could not remove the aborted incoming guest', { guest: m.guest, err: e }));
}

/** "Not committed", recorded now unless a commit was recorded first: returns the decision that stands, final either way. */
export function decideNotCommitted(host: Host, migrationId: string, guest: string): Promise<ResolveDecision> {
  return host.state.decide(migrationId, guest, 'not-committed');
}

/**
 * After a restart, an incoming guest the previous agent left: dropped unless that agent recorded
 * "committed" (a drop is told to the source at once); committed then, once `source.mayRun` says
 * the source's operator did not fence it meanwhile (the agent died between the record and the
 * resume, so the source may have been settled without it). That may wait a long time (the source
 * unreachable): it goes on in the background, the guest paused; this resolves once the record is
 * read and the not-committed case is done.
 */
export async function finishLeftIncoming(
  host: Host,
  migrationId: string,
  guest: string,
  source: { mayRun(migrationId: string): Promise<boolean>; dropped(migrationId: string): void },
): Promise<void> {
  const client = await host.guests.client(guest);
  if (await commitOutlivedItsRecord(host, migrationId, guest, client)) return;
  const decision = await decideNotCommitted(host, migrationId, guest);
  if (decision === 'not-committed') {
    await host.guests.forget(guest);
    host.log.warn('dropped an incoming guest left by the previous agent', { migrationId, guest });
    source.dropped(migrationId);
    return;
  }
  const info = client ? await client.migration() : null;
  const ready = client !== null && info?.phase === 'ready-to-commit';
  void (async () => {
    // Recorded, not run (or its process gone with the host): the source may have been fenced meanwhile.
    if (!(await source.mayRun(migrationId))) {
      if (ready) await client.abort().catch(() => {});
      await host.guests.forget(guest);
      host.log.warn("dropped an incoming guest: its source's operator settled the migration without this host", { migrationId, guest });
      return;
    }
    await host.guests.commitIncoming(guest);
    if (ready) await client.commit();
    host.log.info('finished a commit left by the previous agent', { migrationId, guest });
  })().catch((err) => host.log.error('finishing a commit left by the previous agent failed', { migrationId, guest, err }));
}

/**
 * A state directory older than its guest process (restored from a backup, or rolled back with its
 * filesystem): the guest process ran its commit — which it does only when the agent tells it to,
 * after the commit record was durable — but no record is here now. The process's own account is
 * the newer one: the record is written again and the guest stays. Recording "not committed"
 * instead would stop the only running copy (the source has handed it over).
 */
async function commitOutlivedItsRecord(host: Host, migrationId: string, guest: string, client: GuestClient | null): Promise<boolean> {
  const info = client ? await client.migration().catch(() => null) : null;
  if (info?.role !== 'destination' || info.migrationId !== migrationId || info.phase !== 'committed') return false;
  if ((await host.state.decision(migrationId)) !== null) return false;
  if ((await host.state.decide(migrationId, guest, 'committed')) !== 'committed') return false;
  await host.guests.commitIncoming(guest);
  host.log.warn(
    'the state directory is older than the guest process: it had committed, the commit record is written again and the guest stays',
    {
      migrationId,
      guest,
    },
  );
  return true;
}

// ---- the source obeys -----------------------------------------------------------------------

/**
 * Acts on how the source's guest process says its migration ended (`info`), asking the destination
 * when in doubt; resolves with where the guest runs: 'committed' there, 'aborted' here.
 */
export async function settleOutgoing(
  host: Host,
  queries: ResolveQueries,
  m: OutgoingMigration,
  client: GuestClient,
  info: MigrationInfo,
  emit: (e: MigrationStreamEvent) => void,
): Promise<'committed' | 'aborted'> {
  if (info.phase === 'committed') return handOver(host, m, client);
  if (info.phase === 'in-doubt') {
    m.phase = 'in-doubt';
    host.log.warn('outgoing migration in doubt: the guest stays paused until the destination answers', {
      migrationId: m.migrationId,
      guest: m.guest,
    });
    const decision = await queries.untilAnswered(m.destination, m.migrationId, emit);
    emit({ type: 'resolved', decision });
    return decision === 'committed' ? handOver(host, m, client) : resumeHere(host, m, client);
  }
  // The engine gave up before COMPLETE, or the destination said no over the channel: the guest
  // already runs here again, and the destination's copy can never commit.
  m.phase = 'aborted';
  host.log.warn('outgoing migration aborted: the guest runs here', {
    migrationId: m.migrationId,
    guest: m.guest,
    error: info.result?.error ?? null,
  });
  queries.tellAborted(m.destination, m.migrationId, m.guest);
  return 'aborted';
}

/** "Committed": the destination runs the guest; this copy goes, the hand-off recorded first. */
async function handOver(host: Host, m: OutgoingMigration, client: GuestClient): Promise<'committed'> {
  crashPoint('source:before-handoff-record');
  await host.state.recordHandoff(m.migrationId, m.guest, m.destination.host);
  crashPoint('source:after-handoff-record');
  await client.finish().catch((err) => host.log.warn('finishing the handed-over guest failed', { guest: m.guest, err }));
  await host.guests.forget(m.guest);
  m.phase = 'committed';
  host.log.info('guest handed over', { migrationId: m.migrationId, guest: m.guest, to: m.destination.host });
  return 'committed';
}

/** "Not committed", which also forbids the destination a later commit: the guest runs here again. */
async function resumeHere(host: Host, m: OutgoingMigration, client: GuestClient): Promise<'aborted'> {
  await client.resumeAfterAbort();
  m.phase = 'aborted';
  host.log.info('destination did not commit: the guest runs here again', { migrationId: m.migrationId, guest: m.guest });
  return 'aborted';
}
