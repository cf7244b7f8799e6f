/**
 * Guest processes, for any driver: each guest is its own detached process (it outlives the agent)
 * with a control socket in its directory, run from its driver's entry.
 *
 *   const guest = await startGuest(dir, config);                   // spawn, wait until it answers
 *   const again = await attachGuest(dir);                          // after an agent restart (null: none)
 *   const info = await guest.migrateOut(spec, onEvent);            // source side
 *   // 'committed': record the hand-off, then guest.finish(); 'in-doubt': ask the destination,
 *   // then guest.finish() ("committed") or guest.resumeAfterAbort() ("not committed")
 *   const incoming = await startIncomingGuest(dir, config, spec);  // destination side
 *   incoming.addConnection(socket, head);                          // each data connection for it
 *   const ready = await incoming.client.awaitMigration(onEvent);   // -> phase 'ready-to-commit'
 *   // record ownership durably, then:
 *   await incoming.client.commit();                                // or incoming.client.abort()
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { FerryError } from '../errors.js';
import type { IncomingSpec } from '../migration/types.js';
import { GuestClient } from './client.js';
import { checkGuestConfig } from './config.js';
import { driverOf } from './drivers.js';
import { writeFileAtomicSync } from '../common/atomic-file.js';
import { CONFIG_FILE, CONTROL_SOCKET, LOG_FILE } from './files.js';
import type { GuestConfig } from './types.js';
import { sleep } from '../common/async.js';

/** How long a new guest process may take to answer on its control socket. */
const START_TIMEOUT_MS = 30_000;
/** Unix socket paths are limited to 108 bytes on Linux. */
const MAX_SOCKET_PATH = 107;

function prepareDir(dir: string, config: GuestConfig): GuestConfig {
  const checked = checkGuestConfig(config);
  if (join(dir, CONTROL_SOCKET).length > MAX_SOCKET_PATH) {
    throw new FerryError('ERR_FERRY_INPUT', `guest directory path too long for a unix socket (${dir})`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomicSync(join(dir, CONFIG_FILE), `${JSON.stringify(checked, null, 2)}\n`);
  return checked;
}

function logTail(dir: string): string {
  try {
    return readFileSync(join(dir, LOG_FILE), 'utf8').trim().split('\n').slice(-3).join(' | ');
  } catch {
    return '(no log)';
  }
}

async function spawnGuest(dir: string, config: GuestConfig, incoming: boolean): Promise<{ child: ChildProcess; client: GuestClient }> {
  const log = openSync(join(dir, LOG_FILE), 'a', 0o600);
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [driverOf(config.driver).entry(), dir, ...(incoming ? ['--incoming'] : [])], {
      detached: true,
      stdio: incoming ? ['ignore', log, log, 'ipc'] : ['ignore', log, log],
      cwd: dir,
    });
  } finally {
    closeSync(log);
  }
  let exitCode: number | null = null;
  child.once('exit', (code, signal) => (exitCode = code ?? (signal ? 128 : 1)));
  child.unref();
  child.channel?.unref();
  const deadline = performance.now() + START_TIMEOUT_MS;
  for (;;) {
    if (exitCode !== null) throw new FerryError('ERR_FERRY_INTERNAL', `guest process exited (${exitCode}) while starting: ${logTail(dir)}`);
    try {
      return { child, client: await GuestClient.connect(dir) };
    } catch (err) {
      if (err instanceof FerryError && err.code === 'ERR_FERRY_REFUSED') throw err;
    }
    if (performance.now() > deadline) {
      child.kill('SIGKILL');
      throw new FerryError('ERR_FERRY_TIMEOUT', `guest process did not answer within ${START_TIMEOUT_MS} ms: ${logTail(dir)}`);
    }
    await sleep(25);
  }
}

async function refuseIfRunning(dir: string): Promise<void> {
  const existing = await attachGuest(dir);
  if (existing) {
    existing.close();
    throw new FerryError('ERR_FERRY_REFUSED', `a guest process (pid ${existing.pid}) already runs in ${dir}`);
  }
}

/**
 * Starts a guest process in `dir` (created 0700 if missing; config written to dir/guest.json),
 * running its workload, and resolves once it answers on dir/control.sock.
 */
export async function startGuest(dir: string, config: GuestConfig): Promise<GuestClient> {
  await refuseIfRunning(dir);
  const checked = prepareDir(dir, config);
  return (await spawnGuest(dir, checked, false)).client;
}

/** Connects to the guest process already running in `dir`; null when none answers there. */
export async function attachGuest(dir: string): Promise<GuestClient | null> {
  if (!existsSync(join(dir, CONTROL_SOCKET))) return null;
  try {
    return await GuestClient.connect(dir);
  } catch (err) {
    if (err instanceof FerryError && err.code !== 'ERR_FERRY_NETWORK') throw err;
    return null;
  }
}

/** A destination guest process: a GuestClient, plus the IPC channel that carries data sockets to it. */
export class IncomingGuest {
  constructor(
    readonly client: GuestClient,
    readonly child: ChildProcess,
  ) {}

  /**
   * Hands one data connection of this migration to the guest process, with the bytes the router
   * already read from it (`head`). The socket is the guest process's from here on.
   */
  addConnection(socket: Socket, head: Uint8Array = new Uint8Array(0)): void {
    if (!this.child.connected) {
      socket.destroy();
      throw new FerryError('ERR_FERRY_NETWORK', 'the incoming guest process is gone (its IPC channel closed)');
    }
    this.child.send({ type: 'connection', head: Buffer.from(head).toString('base64') }, socket, { keepOpen: false });
  }
}

/**
 * Starts a guest process in `dir` to receive migration `spec.migrationId`: memory allocated,
 * disk image emptied, no workload until commit. The key and nonce go over the control socket as
 * raw bytes; the caller wipes its own copies. Follow it with `client.awaitMigration()`; at phase
 * 'ready-to-commit', record ownership durably, then `client.commit()` (or `client.abort()`).
 */
export async function startIncomingGuest(dir: string, config: GuestConfig, spec: IncomingSpec): Promise<IncomingGuest> {
  await refuseIfRunning(dir);
  const checked = prepareDir(dir, config);
  const { child, client } = await spawnGuest(dir, checked, true);
  const { key, nonce, ...params } = spec;
  const secret = Buffer.concat([key, nonce]);
  try {
    await client.request('prepare-incoming', params, { secret });
  } catch (err) {
    client.close();
    child.kill('SIGKILL');
    throw err;
  } finally {
    secret.fill(0);
  }
  return new IncomingGuest(client, child);
}
