/**
 * The synthetic guest process: `node dist/guest/synthetic/main.js GUESTDIR [--incoming]`.
 *
 * Spawned detached by its agent (src/guest/index.ts), with stdio to GUESTDIR/guest.log, so it
 * outlives the agent; it reads GUESTDIR/guest.json, keeps GUESTDIR/guest.pid, and answers on
 * GUESTDIR/control.sock. Started with --incoming it waits for a migration instead of running its
 * workload, and takes data sockets over its IPC channel.
 */
import { readFileSync, rmSync, unlinkSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { join } from 'node:path';
import { pageCopier } from '../../crypto/index.js';
import { FerryError, toFerryError } from '../../errors.js';
import { migrateDestination } from '../../migration/destination.js';
import { InPlaceOpener } from '../../migration/in-place.js';
import { dataPayloadPool, receiveInto } from '../../migration/payload-pool.js';
import { migrateSource } from '../../migration/source.js';
import type { MigrationEvent, MigrationResult } from '../../migration/types.js';
import { checkGuestConfig } from '../config.js';
import { writeFileAtomicSync } from '../../common/atomic-file.js';
import { CONFIG_FILE, CONTROL_SOCKET, PID_FILE } from '../files.js';
import { keyOfTrailer, PROTOCOL_VERSION, type MigrateOutParams, type PrepareIncomingParams } from '../protocol.js';
import type { MigrationInfo } from '../migration-tracker.js';
import { listenControl, type GuestCallContext, type GuestHandlers } from '../control-server.js';
import { noSerialConsole } from '../console.js';
import { SyntheticGuest } from './guest.js';
import { MigrationTracker } from '../migration-tracker.js';
import { openIncoming, openOutgoing, type IncomingTransport } from '../transport.js';

const dir = process.argv[2];
const incomingMode = process.argv.includes('--incoming');
if (!dir) {
  process.stderr.write('usage: main.js GUESTDIR [--incoming]\n');
  process.exit(2);
}

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} ${message}\n`);
}

const loaded = checkGuestConfig(JSON.parse(readFileSync(join(dir, CONFIG_FILE), 'utf8')));
if (loaded.driver !== 'synthetic') throw new FerryError('ERR_FERRY_INPUT', `${dir} holds a ${loaded.driver} guest, not a synthetic one`);
const config = loaded;
const guest = new SyntheticGuest(dir, config, { incoming: incomingMode });
let tracker: MigrationTracker | null = null;
/** --incoming: the migration that brought the guest here (tracker moves on to later outgoing ones). */
let arrival: MigrationTracker | null = null;
/** Cancels the outgoing migration in progress (before switch-over; the engine ignores it after). */
let cancelOutgoing: AbortController | null = null;
let incoming: IncomingTransport | null = null;
/** Sockets that arrived over IPC before prepare-incoming: adopted once the channel exists. */
const earlySockets: Array<{ socket: Socket; head: Uint8Array }> = [];
let decide: ((d: 'commit' | 'abort') => void) | null = null;
let server: Server;
let exiting = false;

async function exit(code: number, removeDir = false): Promise<void> {
  if (exiting) return;
  exiting = true;
  await guest.close();
  server?.close();
  for (const f of [CONTROL_SOCKET, PID_FILE]) {
    try {
      unlinkSync(join(dir!, f));
    } catch {
      // already gone
    }
  }
  if (removeDir) rmSync(dir!, { recursive: true, force: true });
  log(`guest process exits (${code})`);
  // Let the last reply reach the agent before the process goes.
  setTimeout(() => process.exit(code), 50);
}

/**
 * A source guest must not stop while its migration is running or unresolved (stopping it in doubt
 * could leave the guest running nowhere). An incoming guest may always stop: before commit that
 * is an abort, after commit an ordinary stop.
 */
function busy(): boolean {
  return tracker !== null && tracker.role === 'source' && !['committed', 'aborted'].includes(tracker.phase);
}

/** Streams a migration's events to one control connection until it settles. */
async function follow(t: MigrationTracker, ctx: GuestCallContext<MigrationEvent>): Promise<MigrationInfo> {
  const unsubscribe = t.subscribe((e) => ctx.emit(e));
  try {
    await Promise.race([t.waitSettled(), ctx.closed]);
  } finally {
    unsubscribe();
  }
  return t.info();
}

/** The error, if any, and the most threads one seal/open ran on (what the crypto-thread limit bounds). */
function outcomeDetail(result: MigrationResult): string {
  const threads = result.cryptoThreads.peak > 0 ? `; crypto on ${result.cryptoThreads.peak} thread${result.cryptoThreads.peak === 1 ? '' : 's'} at most` : '';
  return `${result.error ? ` (${result.error.code}: ${result.error.message})` : ''}${threads}`;
}

const threadsText = (threads: number | undefined) => (threads === undefined ? 'crypto on every core' : `crypto on at most ${threads} thread${threads === 1 ? '' : 's'}`);

async function runOutgoing(params: MigrateOutParams, ctx: GuestCallContext<MigrationEvent>): Promise<MigrationInfo> {
  // A guest that arrived here runs like any other once its arrival committed: it may move on,
  // and after an outgoing migration that did not (aborted, cancelled) try again.
  const arrived = arrival?.phase === 'committed';
  if (incomingMode && !arrived) throw new FerryError('ERR_FERRY_REFUSED', 'an incoming guest cannot migrate out before its arrival commits');
  if (busy()) throw new FerryError('ERR_FERRY_REFUSED', 'a migration of this guest is already in progress');
  if (guest.state !== 'running' && guest.state !== 'paused') throw new FerryError('ERR_FERRY_REFUSED', `cannot migrate a guest that is ${guest.state}`);
  const spec = { ...params, ...keyOfTrailer(ctx.secret) };
  const t = new MigrationTracker('source', spec.migrationId);
  tracker = t;
  const cancel = new AbortController();
  cancelOutgoing = cancel;
  const before = guest.state;
  guest.state = 'migrating';
  log(`migration ${spec.migrationId} out to ${spec.networks.join(',')} (${spec.mode}, ${spec.streams} streams, ${threadsText(spec.cryptoThreads)})`);
  const unsubscribe = t.subscribe((e) => ctx.emit(e));
  const emit = (e: MigrationEvent): void => t.emit(e);
  try {
    let channel;
    try {
      // A cancel while the channel connects ends the connecting at once (not its timeouts).
      channel = await openOutgoing(spec, spec.networks, cancel.signal);
    } finally {
      spec.key.fill(0);
      spec.nonce.fill(0);
    }
    // A cancel that came after the channel opened and before the engine listens: it stops at once.
    const result = await migrateSource(channel, guest, { ...spec, signal: cancel.signal }, emit);
    if (result.outcome === 'committed') guest.state = 'migrated';
    else if (result.outcome === 'in-doubt') guest.state = 'in-doubt';
    else guest.state = before;
    log(`migration ${spec.migrationId}: ${result.outcome}${outcomeDetail(result)}`);
    t.setPhase(result.outcome, result);
    return t.info();
  } catch (err) {
    // No channel: nothing was sent, the guest never paused.
    const e = toFerryError(err);
    guest.state = before;
    t.emit({ type: 'aborted', code: e.code, message: e.message });
    t.setPhase('aborted');
    log(`migration ${spec.migrationId}: aborted (${e.code}: ${e.message})`);
    throw e;
  } finally {
    unsubscribe();
    if (cancelOutgoing === cancel) cancelOutgoing = null;
  }
}

/**
 * The operator's cancel of the outgoing migration `migrationId`: accepted before switch-over (the
 * engine stops, the guest runs on here), refused from the switch-over decision on, when the
 * destination decides the hand-off (docs/migration.md, "Cancelling"). Returns at once; the
 * migration's own reply says how it ended.
 */
function cancelMigration({ migrationId: id }: { migrationId: string }): { migrationId: string; cancelled: true } {
  const t = tracker;
  if (!t || t.role !== 'source' || t.migrationId !== id || !cancelOutgoing) {
    throw new FerryError('ERR_FERRY_REFUSED', `no outgoing migration "${id}" runs in this guest process`);
  }
  if (t.phase !== 'running') throw new FerryError('ERR_FERRY_REFUSED', `migration "${id}" is ${t.phase}: nothing left to cancel`);
  if (t.switchingOver) {
    throw new FerryError('ERR_FERRY_REFUSED', 'switch-over already under way: the guest is paused for the hand-off, which the destination decides; it ends by itself, normally within the downtime limit (--max-downtime)');
  }
  log(`migration ${id}: cancelled by the operator`);
  cancelOutgoing.abort(new FerryError('ERR_FERRY_ABORTED', 'cancelled by the operator'));
  return { migrationId: id, cancelled: true };
}

async function prepareIncoming(params: PrepareIncomingParams, ctx: GuestCallContext<never>): Promise<{ migrationId: string }> {
  if (!incomingMode) throw new FerryError('ERR_FERRY_REFUSED', 'this guest was not started to receive a migration');
  if (arrival) throw new FerryError('ERR_FERRY_REFUSED', 'this incoming guest is already prepared');
  const spec = { ...params, ...keyOfTrailer(ctx.secret) };
  const t = new MigrationTracker('destination', spec.migrationId);
  tracker = t;
  arrival = t;
  // DATA payloads land in reused buffers, not gigabytes of fresh memory for the collector.
  const payloads = dataPayloadPool();
  // Encrypted memory DATA is opened straight into guest memory (in-place.ts); the rest into payloads.
  // FERRY_OPEN_IN_PLACE=0 turns it off: the A/B switch of docs/performance.md.
  const inPlace = process.env.FERRY_OPEN_IN_PLACE === '0' ? null : new InPlaceOpener(guest);
  try {
    incoming = await openIncoming(spec, { allocatePayload: receiveInto(payloads), placePayload: inPlace?.place ?? null });
  } finally {
    spec.key.fill(0);
    spec.nonce.fill(0);
  }
  for (const { socket, head } of earlySockets.splice(0)) incoming.adopt(socket, head);
  log(`incoming migration ${spec.migrationId} prepared (${spec.mode}, ${threadsText(spec.cryptoThreads)})`);
  void migrateDestination(
    incoming.channel,
    guest,
    {
      migrationId: spec.migrationId,
      decide: () => new Promise((resolve) => (decide = resolve)),
      checkDevice: (device) => guest.checkDevice(device),
      resume: (device) => guest.startFromDevice(device),
      payloads,
      copyPages: pageCopier(),
      inPlace,
    },
    (e) => t.emit(e),
  ).then((result) => {
    log(`incoming migration ${spec.migrationId}: ${result.outcome}${outcomeDetail(result)}`);
    t.setPhase(result.outcome, result);
    // Not committed: this process never runs the guest. Give waiters a moment to hear it.
    if (result.outcome !== 'committed') setTimeout(() => void exit(1), 1000);
  });
  return { migrationId: spec.migrationId };
}

function decideIncoming(decision: 'commit' | 'abort'): () => Promise<MigrationInfo> {
  return async () => {
    if (!tracker || tracker.role !== 'destination') throw new FerryError('ERR_FERRY_REFUSED', 'no incoming migration here');
    if (tracker.phase !== 'ready-to-commit' || !decide) {
      throw new FerryError('ERR_FERRY_REFUSED', `cannot ${decision}: the incoming migration is ${tracker.phase}`);
    }
    const d = decide;
    decide = null;
    d(decision);
    await tracker.waitFinal();
    return tracker.info();
  };
}

const handlers: GuestHandlers = {
  hello: () => ({ protocol: PROTOCOL_VERSION, pid: process.pid, name: config.name, incoming: incomingMode }),
  status: () => ({ ...guest.status(process.pid), workloadReady: guest.vcpu.ready, migration: tracker?.info() ?? null }),
  pause: async () => {
    await guest.userPause();
    return guest.status(process.pid);
  },
  resume: () => {
    guest.userResume();
    return guest.status(process.pid);
  },
  throttle: (p) => {
    if (busy()) throw new FerryError('ERR_FERRY_REFUSED', 'the migration sets the throttle while it runs');
    guest.setThrottle(p.percent);
    return guest.status(process.pid);
  },
  digest: async () => ({ digest: await guest.digest(), algorithm: 'sha256-ferry-guest-v1' }),
  console: () => noSerialConsole(config.name, config.driver),
  stop: () => {
    if (busy()) throw new FerryError('ERR_FERRY_REFUSED', `a migration is ${tracker!.phase}: resolve it first`);
    void exit(0);
    return { stopped: true as const };
  },
  destroy: () => {
    if (busy()) throw new FerryError('ERR_FERRY_REFUSED', `a migration is ${tracker!.phase}: resolve it first`);
    void exit(0, true);
    return { destroyed: true as const };
  },
  'migrate-out': runOutgoing,
  'cancel-migration': cancelMigration,
  'prepare-incoming': prepareIncoming,
  migration: () => tracker?.info() ?? null,
  'await-migration': (_p, ctx) => {
    if (!tracker) throw new FerryError('ERR_FERRY_NOT_FOUND', 'no migration has run in this guest process');
    return follow(tracker, ctx);
  },
  commit: decideIncoming('commit'),
  abort: decideIncoming('abort'),
  'resume-after-abort': () => {
    if (guest.state !== 'in-doubt') throw new FerryError('ERR_FERRY_REFUSED', `resume-after-abort is for a guest in doubt; this one is ${guest.state}`);
    guest.state = 'running';
    guest.setThrottle(0);
    guest.resume();
    tracker?.setPhase('aborted');
    log('in-doubt migration resolved: not committed at the destination; the guest runs here again');
    return guest.status(process.pid);
  },
  finish: () => {
    if (guest.state !== 'in-doubt' && guest.state !== 'migrated') throw new FerryError('ERR_FERRY_REFUSED', `finish is for a guest handed over; this one is ${guest.state}`);
    tracker?.setPhase('committed');
    log('migration resolved: committed at the destination; this copy stops');
    void exit(0);
    return { finished: true as const };
  },
};

process.on('message', (msg: unknown, handle: unknown) => {
  const m = msg as { type?: unknown; head?: unknown } | null;
  if (!m || m.type !== 'connection' || !handle) return;
  const socket = handle as Socket;
  const head = typeof m.head === 'string' ? Buffer.from(m.head, 'base64') : Buffer.alloc(0);
  if (incoming) incoming.adopt(socket, head);
  else if (incomingMode && earlySockets.length < 16) earlySockets.push({ socket, head });
  else socket.destroy();
});
// The agent may die; its IPC channel with it. This process carries on (a restarted agent re-attaches).
process.on('disconnect', () => log('agent IPC channel closed'));
process.on('SIGTERM', () => {
  if (busy()) {
    log('SIGTERM ignored: a migration is in progress or unresolved');
    return;
  }
  void exit(0);
});
process.on('SIGHUP', () => {});

/** An incoming guest nobody prepared (its agent died between spawn and prepare) has no future. */
const UNPREPARED_EXIT_MS = 60_000;

async function main(): Promise<void> {
  if (incomingMode) {
    setTimeout(() => {
      if (tracker) return;
      log(`no migration prepared within ${UNPREPARED_EXIT_MS} ms: exiting`);
      void exit(1);
    }, UNPREPARED_EXIT_MS);
  }
  server = await listenControl(join(dir!, CONTROL_SOCKET), handlers);
  writeFileAtomicSync(join(dir!, PID_FILE), `${process.pid}\n`);
  log(`guest ${config.name} up: pid ${process.pid}, ${config.memoryBytes} bytes memory, ${config.diskBytes} bytes disk, ${incomingMode ? 'incoming' : 'running'}`);
}

main().catch((err) => {
  log(`guest process failed to start: ${(err as Error).message}`);
  process.exit(1);
});
