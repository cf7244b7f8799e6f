/**
 * The coordinator's steps of one migration, as the tests of the agent drive them over the real
 * control API (the `ferry migrate` command does the same, with progress and placement): a fresh
 * key, prepare-incoming on the destination, start-outgoing on the source, then the key wiped.
 */
import { MigrationKey, newMigrationId } from '../../src/coordinator/keys.js';
import type { Cluster } from '../../src/coordinator/cluster.js';
import { connectHost } from '../../src/coordinator/connect.js';
import { configOf } from '../../src/guest/config.js';
import type {
  Method,
  MigrationStreamEvent,
  Params,
  PrepareIncomingResult,
  Result,
  StartOutgoingResult,
} from '../../src/control/protocol.js';

/** One call to a host's agent on a fresh connection, closed afterwards. */
export async function ask<M extends Method>(cluster: Cluster, host: string, method: M, params: Params<M>): Promise<Result<M>> {
  const client = await connectHost(cluster, host);
  try {
    return await client.call(method, params);
  } finally {
    client.close();
  }
}

export interface TestMigration {
  migrationId: string;
  prepared: PrepareIncomingResult;
  result: StartOutgoingResult;
  events: MigrationStreamEvent[];
  queuedAtDestination: number[];
  /** Copies of the key and nonce, for leak checks (the real ones are wiped). */
  key: Buffer;
  nonce: Buffer;
}

export async function migrate(
  cluster: Cluster,
  guest: string,
  from: string,
  to: string,
  options: {
    mode?: 'encrypted' | 'plain';
    onPrepared?: () => void;
    onSettled?: () => void;
    onEvent?: (event: MigrationStreamEvent) => void;
    maxBytesPerSecond?: number;
    commitTimeoutMs?: number;
    maxDowntimeMs?: number;
  } = {},
): Promise<TestMigration> {
  const source = await connectHost(cluster, from);
  const destination = await connectHost(cluster, to);
  const secret = MigrationKey.generate();
  const migrationId = newMigrationId();
  const copy = { key: Buffer.from(secret.key), nonce: Buffer.from(secret.nonce) };
  try {
    const config = await source.call('guest.get', { name: guest });
    const guestConfig = configOf(config);
    const channel = {
      migrationId,
      mode: options.mode ?? 'encrypted',
      streams: 2,
      ...(options.maxBytesPerSecond ? { maxBytesPerSecond: options.maxBytesPerSecond } : {}),
    };
    const queuedAtDestination: number[] = [];
    const prepared = await destination.call(
      'migration.prepare-incoming',
      // The source's control address, as the coordinator gives it within one cluster: whom a
      // restarted destination agent tells, or asks, about what its predecessor left.
      {
        ...channel,
        guest: guestConfig,
        source: from,
        sourceControl: cluster.hosts.get(from)!.control,
        generation: (config.generation ?? 0) + 1,
      },
      {
        secret: secret.bytes,
        timeoutMs: null,
        onEvent: (e) => queuedAtDestination.push(e.position),
      },
    );
    options.onPrepared?.();
    const events: MigrationStreamEvent[] = [];
    const dest = cluster.hosts.get(to)!;
    const result = await source.call(
      'migration.start-outgoing',
      {
        ...channel,
        guest,
        destination: { host: to, control: dest.control },
        networks: dest.networks.map((n) => n.advertise),
        verify: true,
        ...(options.commitTimeoutMs ? { commitTimeoutMs: options.commitTimeoutMs } : {}),
        ...(options.maxDowntimeMs ? { maxDowntimeMs: options.maxDowntimeMs } : {}),
      },
      {
        secret: secret.bytes,
        timeoutMs: null,
        onEvent: (e) => {
          events.push(e);
          options.onEvent?.(e);
        },
      },
    );
    options.onSettled?.();
    return { migrationId, prepared, result, events, queuedAtDestination, ...copy };
  } finally {
    secret.wipe();
    source.close();
    destination.close();
  }
}
