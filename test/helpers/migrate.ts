/**
 * A test driver that plays both agents of a migration between two real guest processes: it
 * starts the incoming guest, routes the data connections to it (as the destination agent's
 * router does, over the IPC channel), starts the source's migration, and drives the commit.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { startIncomingGuest, type GuestClient, type IncomingGuest, type MigrationInfo } from '../../src/guest/index.js';
import type { GuestConfig } from '../../src/guest/types.js';
import type { MigrationEvent, OutgoingSpec } from '../../src/migration/types.js';

export interface MigrateOptions extends Partial<Omit<OutgoingSpec, 'key' | 'nonce' | 'networks' | 'migrationId'>> {
  /** What the destination agent decides at ready-to-commit; or a function run then instead. */
  atReady?: 'commit' | 'abort' | ((incoming: IncomingGuest, source: GuestClient) => Promise<void>);
}

export interface Migrated {
  source: MigrationInfo;
  destination: MigrationInfo;
  incoming: IncomingGuest;
  events: MigrationEvent[];
}

export async function migrate(source: GuestClient, dstDir: string, config: GuestConfig, options: MigrateOptions = {}): Promise<Migrated> {
  const { atReady = 'commit', ...spec } = options;
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
    const out = source.migrateOut({ ...spec, migrationId, key, nonce, mode, streams, networks: [network] }, (e) => events.push(e));
    out.catch(() => {});
    let destination = await ready;
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
