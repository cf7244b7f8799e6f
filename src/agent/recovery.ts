/**
 * After an agent restart: finishing what the previous agent left (docs/operations.md, "The resolve
 * query and the commit record"). The guest processes outlived it; their records and the ownership
 * records say what each was doing.
 */
import { finishLeftIncoming } from './commit.js';
import type { MigrationHost } from './migration-records.js';
import type { OutgoingMigrations } from './outgoing.js';

/**
 * Incoming guests are committed when their commit was recorded and dropped otherwise; source
 * guests still migrating are followed, those in doubt get their answer from the destination, and
 * those already handed over are let go.
 */
export async function recover(host: MigrationHost, outgoing: OutgoingMigrations): Promise<void> {
  for (const record of await host.guests.records()) {
    const name = record.config.name;
    try {
      if (record.incoming) await finishLeftIncoming(host, record.incoming, name);
      else await recoverOutgoing(host, outgoing, name);
    } catch (err) {
      host.log.error('recovery failed', { guest: name, err });
    }
  }
}

/** A source guest whose guest process reports a migration that is still running, in doubt, or committed: adopted. */
async function recoverOutgoing(host: MigrationHost, outgoing: OutgoingMigrations, name: string): Promise<void> {
  const client = await host.guests.client(name);
  const info = client ? await client.migration() : null;
  if (!client || !info || info.role !== 'source' || (info.phase !== 'running' && info.phase !== 'in-doubt' && info.phase !== 'committed'))
    return;
  const { destination } = await host.state.readOutgoing(info.migrationId);
  outgoing.adopt(name, client, info, destination);
}
