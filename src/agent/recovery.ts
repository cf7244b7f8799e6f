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
/** What recovery asks of the source of a migration the previous agent left here as its destination (fence.ts). */
export interface SourceContact {
  /** A commit recorded but not run: may it run now (not fenced at the source)? */
  mayRun(migrationId: string): Promise<boolean>;
  /** Dropped, not committed: the source may be told at once. */
  dropped(migrationId: string): void;
}

export async function recover(host: MigrationHost, outgoing: OutgoingMigrations, source: SourceContact): Promise<void> {
  for (const record of await host.guests.records()) {
    const name = record.config.name;
    const { incoming } = record;
    try {
      if (incoming) await finishLeftIncoming(host, incoming, name, source);
      else await recoverOutgoing(host, outgoing, name, source);
    } catch (err) {
      host.log.error('recovery failed', { guest: name, err });
    }
  }
}

/**
 * A source guest whose guest process reports a migration that is still running, in doubt, or
 * committed: adopted. A guest that arrived here and was marked this host's, whose guest process
 * still waits for its commit (the previous agent died between the two): its commit is finished.
 */
async function recoverOutgoing(host: MigrationHost, outgoing: OutgoingMigrations, name: string, source: SourceContact): Promise<void> {
  const client = await host.guests.client(name);
  const info = client ? await client.migration() : null;
  if (info?.role === 'destination' && info.phase === 'ready-to-commit') {
    await finishLeftIncoming(host, info.migrationId, name, source);
    return;
  }
  if (!client || !info || info.role !== 'source' || (info.phase !== 'running' && info.phase !== 'in-doubt' && info.phase !== 'committed'))
    return;
  const { destination } = await host.state.readOutgoing(info.migrationId);
  outgoing.adopt(name, client, info, destination);
}
