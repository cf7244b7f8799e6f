/**
 * A migration as a job, the way `ferry migrations` and the metrics show it (`migration.list`):
 * the figures an agent gathers while one runs — the engine's last progress report on the source,
 * what arrived and over which network on the destination — and one side's view built from them.
 */
import type { Socket } from 'node:net';
import type { MigrationEvent } from '../migration/types.js';
import type { MigrationJob } from '../control/protocol.js';
import { formatAddress } from '../common/address.js';
import type { TrackedMigration } from './migration-records.js';
import { crashPoint } from './crash-point.js';

type PassEvent = Extract<MigrationEvent, { type: 'pass' }>;

export interface JobFigures {
  /** Source: the engine's latest pass report. */
  progress: PassEvent | null;
  /** Source: the pause the engine expects, once it decided to switch over. */
  expectedDowntimeMs: number | null;
  /** Destination: payload received by the end of the last pass. */
  bytesReceived: number | null;
  /** Destination: the local address the latest data connection arrived on; source: after a failover, the network it moved to. */
  network: string | null;
  failovers: number;
}

export function freshFigures(): JobFigures {
  return { progress: null, expectedDowntimeMs: null, bytesReceived: null, network: null, failovers: 0 };
}

/** An engine event of migration `m`: its last event, and the figures it carries. */
export function noteEvent(m: TrackedMigration, e: MigrationEvent): void {
  m.lastEvent = e;
  // The named moments of a migration that are not durable writes (crash-point.ts).
  if (m.role === 'source' && e.type === 'pass') crashPoint('source:in-precopy');
  else if (m.role === 'source' && e.type === 'switch-over') crashPoint('source:at-switch-over');
  else if (m.role === 'destination' && e.type === 'progress') crashPoint('destination:in-precopy');
  const f = m.figures;
  if (e.type === 'pass') f.progress = e;
  else if (e.type === 'switch-over') f.expectedDowntimeMs = e.estimatedDowntimeMs;
  else if (e.type === 'progress') f.bytesReceived = e.bytesReceived;
  else if (e.type === 'failover') {
    // Source: the network it dials now (the destination counts the connections that arrive).
    f.failovers++;
    f.network = e.to;
  }
}

/**
 * A data connection of migration `m` arriving here: the network in use is the address it came in
 * on. A connection on another network than the one before is the source failing over (a redial on
 * the same network is not). Counted before the guest process checks its HELLO: a forged connection
 * that names the migration is dropped there, but it has been counted here.
 */
export function noteConnection(m: TrackedMigration, socket: Socket): void {
  const { localAddress, localPort } = socket;
  if (localAddress === undefined || localPort === undefined) return;
  const network = formatAddress({ host: localAddress.replace(/^::ffff:(?=\d+\.)/, ''), port: localPort });
  const f = m.figures;
  if (f.network !== null && f.network !== network) f.failovers++;
  f.network = network;
}

/** What is left over the rate at which it shrinks; null when it does not shrink. */
function etaMs(left: number, rate: number, dirtyRate: number): number | null {
  const drain = rate - dirtyRate;
  return drain > 0 ? Math.round((left * 1000) / drain) : null;
}

/** This host's view of migration `m`. */
export function jobOf(m: TrackedMigration, host: string): MigrationJob {
  const f = m.figures;
  const p = f.progress;
  const switching = f.expectedDowntimeMs !== null && m.phase === 'running';
  return {
    migrationId: m.migrationId,
    role: m.role,
    guest: m.guest,
    host,
    peer: m.peer,
    phase: switching ? 'switch-over' : m.phase,
    position: m.phase === 'queued' ? m.position : null,
    since: m.since,
    mode: m.channel?.mode ?? null,
    maxBytesPerSecond: m.channel?.maxBytesPerSecond ?? null,
    pass: p?.pass ?? null,
    bytesSent: p?.bytesSent ?? null,
    bytesLeft: p?.bytesLeft ?? null,
    rate: p?.throughput ?? null,
    dirtyRate: p?.dirtyRate ?? null,
    throttlePercent: p?.throttlePercent ?? null,
    etaMs: p && m.phase === 'running' && !switching ? etaMs(p.bytesLeft, p.throughput, p.dirtyRate) : null,
    expectedDowntimeMs: f.expectedDowntimeMs,
    bytesReceived: f.bytesReceived,
    network: f.network,
    failovers: f.failovers,
  };
}
