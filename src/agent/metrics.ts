/**
 * The agent's Prometheus metrics (`ferry host serve --metrics ADDR`), through prom-client: each
 * running or queued migration's figures as `migration.list` has them, counts of ended migrations
 * by outcome, the switch-over downtimes, the queues, and the crypto backend. Served as plain HTTP
 * on the one address given, `GET /metrics` only. Labels carry names and ids, never a key or
 * anything derived from one (docs/operations.md, "Metrics").
 */
import http from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { FerryError } from '../errors.js';
import { addressProblem, formatAddress, parseAddress, type Address } from '../common/address.js';
import type { MigrationJob } from '../control/protocol.js';
import type { TrackedMigration } from './migration-records.js';
import type { SlotQueue } from './queue.js';

/** What the metrics read from the agent at each scrape. */
export interface MetricsSource {
  host: string;
  version: string;
  cryptoBackend: string;
  encrypts: boolean;
  outgoing: SlotQueue;
  incoming: SlotQueue;
  jobs(): MigrationJob[];
}

const JOB_LABELS = ['migration_id', 'guest', 'role', 'peer'] as const;
type JobLabel = (typeof JOB_LABELS)[number];

/** One gauge per figure of a running migration; a figure a side does not know is left out, not 0. */
const JOB_GAUGES: { name: string; help: string; value: (j: MigrationJob) => number | null }[] = [
  { name: 'ferry_migration_sent_bytes', help: 'Payload bytes the source has sent so far', value: (j) => j.bytesSent },
  {
    name: 'ferry_migration_remaining_bytes',
    help: 'What the current pass has still to send, or what the guest dirtied since the last pass',
    value: (j) => j.bytesLeft,
  },
  {
    name: 'ferry_migration_received_bytes',
    help: 'Payload bytes the destination received by the end of the last pass',
    value: (j) => j.bytesReceived,
  },
  {
    name: 'ferry_migration_transfer_rate_bytes_per_second',
    help: "The link's rate as the source's engine measures it",
    value: (j) => j.rate,
  },
  { name: 'ferry_migration_dirty_rate_bytes_per_second', help: 'How fast the guest dirties its memory', value: (j) => j.dirtyRate },
  { name: 'ferry_migration_pass', help: 'The pre-copy pass under way (1: all memory)', value: (j) => j.pass },
  { name: 'ferry_migration_throttle_percent', help: 'How much the guest is throttled to converge', value: (j) => j.throttlePercent },
  {
    name: 'ferry_migration_eta_seconds',
    help: 'Estimated time to switch-over: remaining bytes over (rate - dirty rate)',
    value: (j) => sec(j.etaMs),
  },
  {
    name: 'ferry_migration_expected_downtime_seconds',
    help: 'The pause the source expects, once it has decided to switch over',
    value: (j) => sec(j.expectedDowntimeMs),
  },
  { name: 'ferry_migration_queue_position', help: "Place in this host's queue (1: next) while queued", value: (j) => j.position },
  {
    name: 'ferry_migration_failovers',
    help: "Times the migration's data connections moved to another network (destination)",
    value: (j) => (j.role === 'destination' ? j.failovers : null),
  },
];

function sec(ms: number | null): number | null {
  return ms === null ? null : ms / 1000;
}

function jobLabels(j: MigrationJob): Record<JobLabel, string> {
  return { migration_id: j.migrationId, guest: j.guest, role: j.role, peer: j.peer };
}

export type MigrationEndOutcome = 'committed' | 'aborted' | 'in-doubt';

/** How a migration that ended here ended: in-doubt only when it was left to a restarted agent undecided. */
export function endOutcome(m: TrackedMigration): MigrationEndOutcome {
  if (m.phase === 'committed') return 'committed';
  if (m.phase === 'aborted' || m.phase === 'queued') return 'aborted';
  return 'in-doubt';
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly outcomes: Counter<'role' | 'outcome'>;
  private readonly downtime: Histogram;

  constructor(source: MetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: 'ferry_agent_info',
      help: 'This agent: its host name and version (always 1)',
      labelNames: ['host', 'version'],
      registers,
      collect() {
        this.set({ host: source.host, version: source.version }, 1);
      },
    });
    new Gauge({
      name: 'ferry_crypto_backend_info',
      help: 'The AES-256-GCM backend this agent seals with, and whether it encrypts at all (always 1)',
      labelNames: ['backend', 'encrypts'],
      registers,
      collect() {
        this.set({ backend: source.cryptoBackend, encrypts: String(source.encrypts) }, 1);
      },
    });
    const queues = { outgoing: source.outgoing, incoming: source.incoming };
    const perDirection = (name: string, help: string, value: (q: SlotQueue) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['direction'],
        registers,
        collect() {
          for (const [direction, q] of Object.entries(queues)) this.set({ direction }, value(q));
        },
      });
    perDirection('ferry_migration_queue_length', 'Migrations waiting for a slot of this host', (q) => q.queued);
    perDirection('ferry_migrations_running', 'Migrations holding a slot of this host', (q) => q.running);
    perDirection('ferry_migration_slots', 'Migrations this host runs at once (host init --max-outgoing / --max-incoming)', (q) => q.limit);
    // One scrape reads the jobs once, however many gauges show them.
    let snapshot: { at: number; jobs: MigrationJob[] } = { at: -1, jobs: [] };
    const jobs = (): MigrationJob[] => {
      const now = performance.now();
      if (now - snapshot.at > 100) snapshot = { at: now, jobs: source.jobs() };
      return snapshot.jobs;
    };
    new Gauge({
      name: 'ferry_migration_phase',
      help: "A running or queued migration's phase here (1 for the phase it is in)",
      labelNames: [...JOB_LABELS, 'phase'],
      registers,
      collect() {
        this.reset();
        for (const j of jobs()) this.set({ ...jobLabels(j), phase: j.phase }, 1);
      },
    });
    for (const { name, help, value } of JOB_GAUGES) {
      new Gauge({
        name,
        help,
        labelNames: JOB_LABELS,
        registers,
        collect() {
          this.reset();
          for (const j of jobs()) {
            const v = value(j);
            if (v !== null) this.set(jobLabels(j), v);
          }
        },
      });
    }
    this.outcomes = new Counter({
      name: 'ferry_migrations_total',
      help: 'Migrations that ended here, by role and outcome (in-doubt: left undecided to a restarted agent)',
      labelNames: ['role', 'outcome'],
      registers,
    });
    for (const role of ['source', 'destination'])
      for (const outcome of ['committed', 'aborted', 'in-doubt']) this.outcomes.labels({ role, outcome }).inc(0);
    this.downtime = new Histogram({
      name: 'ferry_migration_downtime_seconds',
      help: 'Switch-over pause of each committed migration that left this host, as its source measured it',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
  }

  /** A migration ended here: counted by outcome, and its downtime observed when it left this host committed. */
  ended(m: TrackedMigration): void {
    const outcome = endOutcome(m);
    this.outcomes.inc({ role: m.role, outcome });
    const downtimeMs = m.result?.downtimeMs ?? null;
    if (m.role === 'source' && outcome === 'committed' && downtimeMs !== null) this.downtime.observe(downtimeMs / 1000);
  }

  /** The exposition text of every metric. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}

/** `--metrics ADDR` as given: HOST:PORT, nothing else (ERR_FERRY_USAGE, exit 2, before the agent starts). */
export function metricsAddress(text: string): Address {
  const problem = addressProblem(text);
  if (problem) throw new FerryError('ERR_FERRY_USAGE', `--metrics: ${problem}; give the address to serve metrics on, e.g. 127.0.0.1:9464`);
  return parseAddress(text, '--metrics');
}

export interface MetricsServer {
  /** The address bound, HOST:PORT. */
  readonly address: string;
  close(): Promise<void>;
}

/** Serves `GET /metrics` as plain HTTP on `address` only; ERR_FERRY_NETWORK when it cannot be bound. */
export async function serveMetrics(address: Address, metrics: AgentMetrics): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('only GET\n');
      return;
    }
    metrics.render().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`),
    );
  });
  // Scrapers keep connections open; none of them may hold the agent's stop.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new FerryError('ERR_FERRY_NETWORK', `cannot serve metrics on ${formatAddress(address)}: ${err.code ?? err.message}`)),
    );
    server.listen({ host: address.host, port: address.port, exclusive: true }, resolve);
  });
  const bound = server.address();
  return {
    address: bound && typeof bound === 'object' ? formatAddress({ host: bound.address, port: bound.port }) : formatAddress(address),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
