/**
 * The planning of a migration, before anything is asked of a host: find the guest, connect to
 * both agents, read their capabilities, decide the mode, check that the destination can take it
 * (its memory less its reserve: control/admission.ts).
 * What goes wrong here is a PreflightError, and nothing has changed anywhere.
 */
import { FerryError, toFerryError } from '../errors.js';
import type { AgentClient } from '../control/client.js';
import { KEY_TRAILER_PROTOCOL, type Capabilities } from '../control/protocol.js';
import type { GuestConfig } from '../guest/types.js';
import { configOf } from '../guest/config.js';
import type { ChannelMode } from '../channel/types.js';
import { formatBytes } from '../common/units.js';
import { memoryRefusal } from '../control/admission.js';
import { connectHost } from './connect.js';
import { locateGuest } from './locate.js';
import { decideMode, moveSetting } from './mode.js';
import { runningMigration } from './follow.js';
import type { MigrateRequest, MigrationReport } from './migrate.js';

/** A planned migration: the guest, both agents' connections (the caller closes them), the mode. */
export interface Plan {
  from: string;
  config: GuestConfig;
  /** The source copy's generation (GuestPlace.generation): the destination's becomes one more. */
  generation: number;
  source: AgentClient;
  destination: AgentClient;
  sourceCaps: Capabilities;
  mode: ChannelMode;
  warning: string | null;
}

/** A migration refused before any spec went out; `from` when the guest had been found. */
export class PreflightError extends FerryError {
  constructor(
    cause: FerryError,
    readonly from: string | null,
  ) {
    super(cause.code, cause.message, { cause });
  }
}

/**
 * The result line of a migration refused before it started: the same fields as a MigrationReport,
 * null where nothing is known (so a script reads one shape, whatever happened).
 */
export function preflightReport(
  req: Pick<MigrateRequest, 'guest' | 'to'>,
  err: unknown,
): Omit<MigrationReport, 'mode' | 'backend' | 'from'> & { mode: null; backend: null; from: string | null } {
  const e = toFerryError(err);
  return {
    type: 'result',
    ok: false,
    vm: req.guest,
    from: e instanceof PreflightError ? e.from : null,
    to: req.to.label,
    mode: null,
    backend: null,
    totalMs: 0,
    switchoverMs: null,
    bytesSent: 0,
    zeroPagesSkipped: 0,
    passes: 0,
    verified: null,
    verifyMs: null,
    queuedMs: 0,
    nicFallback: false,
    failovers: [],
    error: e.toJSON(),
  };
}

/** Plans migration `req`; throws a PreflightError. */
export async function planMigration(req: MigrateRequest): Promise<Plan> {
  let from: string | null = req.from ?? null;
  try {
    from ??= (await locateGuest(req.cluster, req.guest)).host;
    return await connectAndCheck(req, from);
  } catch (err) {
    throw new PreflightError(toFerryError(err), from);
  }
}

async function connectAndCheck(req: MigrateRequest, from: string): Promise<Plan> {
  const to = req.to.host.name;
  if (from === to && !req.to.crossCluster) throw new FerryError('ERR_FERRY_INPUT', `guest "${req.guest}" already runs on host ${to}`);
  const source = await connectHost(req.cluster, from);
  let destination: AgentClient | null = null;
  try {
    destination = await connectHost(req.to.cluster, to);
    for (const [client, name] of [
      [source, from],
      [destination, to],
    ] as const)
      keyable(client, name);
    const info = await source.call('guest.get', { name: req.guest });
    const { state } = info;
    const config = configOf(info);
    if (state !== 'running' && state !== 'paused') {
      const running = state === 'migrating' || state === 'in-doubt' ? await runningMigration(source, req.guest) : '';
      throw new FerryError(
        'ERR_FERRY_REFUSED',
        running
          ? `guest "${req.guest}" is ${state} on host ${from}${running}; it can move again once that has ended`
          : state === 'unknown'
            ? `guest "${req.guest}" on host ${from} did not answer its agent (its process busy or exiting): only a running or paused guest can move; ask again in a moment (ferry vm list)`
            : `guest "${req.guest}" is ${state} on host ${from}: only a running or paused guest can move`,
      );
    }
    const generation = info.generation ?? 0;
    await refuseCopyThere(destination, req.guest, generation, {
      label: req.to.label,
      destroy: `ferry vm destroy ${req.guest} --host ${to}${req.to.crossCluster ? ` --cluster ${req.to.cluster.file}` : ''}`,
    });
    const [sourceCaps, destinationCaps] = await Promise.all([source.call('capabilities', {}), destination.call('capabilities', {})]);
    const decision = decideMode(
      moveSetting(req.guest, config.encryptedMigration, req.mode),
      { name: from, encrypts: sourceCaps.encrypts },
      { name: to, encrypts: destinationCaps.encrypts },
    );
    const refusal = memoryRefusal(
      { ...destinationCaps, host: req.to.label },
      config.memoryBytes,
      `guest "${req.guest}" needs ${formatBytes(config.memoryBytes)}; nothing was moved`,
    );
    if (refusal) throw new FerryError('ERR_FERRY_REFUSED', refusal);
    const warning = [decision.warning, stalePagesRisk(config, sourceCaps, req.verify === true)].filter(Boolean).join('; ') || null;
    return { from, config, generation, source, destination, sourceCaps, mode: decision.mode, warning };
  } catch (err) {
    source.close();
    destination?.close();
    throw err;
  }
}

/**
 * A QEMU guest under TCG moved without --verify by a QEMU before 10: QEMU 7.2 has been seen to
 * leave stale guest pages at the destination of any move that takes more than one pass, with or
 * without ferry (docs/qemu.md, "What `--verify` checks"; `ferry bench qemu-digests`). Said before
 * the move, with what avoids it; null otherwise.
 */
export function stalePagesRisk(config: GuestConfig, sourceCaps: Pick<Capabilities, 'drivers'>, verify: boolean): string | null {
  if (verify || config.driver !== 'qemu' || config.accel !== 'tcg') return null;
  const version = sourceCaps.drivers?.qemu?.version;
  const major = version ? Number(version.split('.')[0]) : NaN;
  if (!(major < 10)) return null;
  return `QEMU ${version} under TCG can leave stale guest pages at the destination of a move that takes more than one pass (docs/qemu.md); --verify catches that and keeps the guest here, or run QEMU 10`;
}

/**
 * The destination must not hold the guest already. A copy there of an older generation than the
 * source's is a stale one (its state directory restored from before the guest moved on, the
 * guest not running there): the refusal says so and how to clear it.
 */
async function refuseCopyThere(
  destination: AgentClient,
  name: string,
  generation: number,
  to: { label: string; destroy: string },
): Promise<void> {
  const there = await destination.call('guest.get', { name }).catch((err: unknown) => {
    if (toFerryError(err).code === 'ERR_FERRY_NOT_FOUND') return null;
    throw err;
  });
  if (!there) return;
  const theirs = there.generation ?? 0;
  if (theirs < generation && there.state !== 'running') {
    throw new FerryError(
      'ERR_FERRY_REFUSED',
      `host ${to.label} holds a stale copy of guest "${name}" (${there.state}, generation ${theirs}; the guest is at generation ${generation}): ` +
        `its state directory is older than the guest's last move. Remove that copy with \`${to.destroy}\`, then move again; nothing was moved`,
    );
  }
  throw new FerryError('ERR_FERRY_REFUSED', `host ${to.label} already has a guest "${name}" (${there.state}); nothing was moved`);
}

/**
 * Both agents take the migration key, which only control protocol KEY_TRAILER_PROTOCOL and later
 * carry safely (as raw bytes after the request line, never in JSON). An older agent is refused here,
 * before a key exists, with what to do about it; AgentClient.call would refuse to send it anyway.
 */
function keyable(client: AgentClient, host: string): void {
  const { protocol, agentVersion } = client.agent;
  if (protocol >= KEY_TRAILER_PROTOCOL) return;
  throw new FerryError(
    'ERR_FERRY_REFUSED',
    `host ${host} runs ferry ${agentVersion} (control protocol ${protocol}), which cannot take a migration key as raw bytes (protocol ${KEY_TRAILER_PROTOCOL} or later): upgrade its agent first; nothing was moved`,
  );
}
