/**
 * A migration between two guest processes on this host, this process playing both agents: it
 * starts the incoming guest, routes the data connections to it (as the destination agent's router
 * does, over the IPC channel), starts the source's migration, and drives the commit. For tests
 * and engine benchmarks; between hosts, the agents do this (src/agent).
 */
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import type { MigrationEvent, OutgoingSpec } from '../migration/types.js';
import type { GuestClient, MigrationInfo } from '../guest/client.js';
import { startIncomingGuest, type IncomingGuest } from '../guest/index.js';
import type { GuestConfig } from '../guest/types.js';

export interface MigrateOptions extends Partial<Omit<OutgoingSpec, 'key' | 'nonce' | 'networks' | 'migrationId'>> {
  /** What the destination agent decides at ready-to-commit; or a function run then instead. */
  atReady?: 'commit' | 'abort' | ((incoming: IncomingGuest, source: GuestClient) => Promise<void>);
  /** Given the router's address, the address the source should dial (e.g. a relay in between). */
  route?: (network: string) => string | Promise<string>;
  /** Every event of the source. */
  onEvent?: (event: MigrationEvent) => void;
}

export interface Migrated {
  source: MigrationInfo;
  destination: MigrationInfo;
  incoming: IncomingGuest;
  events: MigrationEvent[];
}

/** Migrates `source` to a new incoming guest in `dstDir` over 127.0.0.1. */
export async function migrateLocally(
  source: GuestClient,
  dstDir: string,
  config: GuestConfig,
  options: MigrateOptions = {},
): Promise<Migrated> {
  const { atReady = 'commit', route, onEvent, ...spec } = options;
  const migrationId = `m-${randomBytes(6).toString('hex')}`;
  const key = randomBytes(32);
  const nonce = randomBytes(8);
  const router = createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => router.listen(0, '127.0.0.1', resolve));
  const network = `127.0.0.1:${(router.address() as AddressInfo).port}`;
  try {
    const mode = spec.mode ?? 'encrypted';
    const streams = spec.streams ?? 2;
    const incoming = await startIncomingGuest(dstDir, config, { migrationId, key, nonce, mode, streams });
    router.on('connection', (socket) => {
      try {
        incoming.addConnection(socket);
      } catch {
        // The incoming guest is gone; addConnection closed the socket.
      }
    });
    const events: MigrationEvent[] = [];
    const ready = incoming.client.awaitMigration();
    const dial = route ? await route(network) : network;
    const out = source.migrateOut({ ...spec, migrationId, key, nonce, mode, streams, networks: [dial] }, (e) => {
      events.push(e);
      onEvent?.(e);
    });
    out.catch(() => {});
    // The incoming guest process may die before it answers (killed, or stopped by a signal): like
    // the destination agent, count that as "not committed" and let the source find out for itself.
    let destination = await ready.catch((err: unknown): MigrationInfo => {
      if (!incoming.client.lost) throw err;
      return { role: 'destination', migrationId, phase: 'aborted', lastEvent: null, result: null };
    });
    if (destination.phase === 'ready-to-commit') {
      if (atReady === 'commit') destination = await incoming.client.commit();
      else if (atReady === 'abort') destination = await incoming.client.abort();
      else await atReady(incoming, source);
    }
    return { source: await out, destination, incoming, events };
  } finally {
    key.fill(0);
    nonce.fill(0);
    router.close();
  }
}
