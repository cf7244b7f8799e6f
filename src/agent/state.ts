/**
 * The agent's state directory (mode 0700). Every file is written atomically and durably (temp file,
 * fsync, rename, fsync of the directory) with mode 0600:
 *
 *   host.json                       this host: name, control address, networks, NIC, limits, memory reserve
 *   agent.pid                       the pid of the agent that holds the directory (dir-lock.ts)
 *   ca.crt  host.crt  host.key      the cluster CA, this host's certificate and key
 *   guests/NAME.json                each guest's record: its config, as the agent owns it
 *   guests/NAME/                    the guest process's own directory (src/guest)
 *   ownership/ID.decision.json      the destination's commit decision for migration ID, first one wins
 *   ownership/ID.handoff.json       the source's record that it handed guest X to host Y
 *   ownership/ID.outgoing.json      the source's note of where migration ID went
 *   ownership/ID.incoming.json      the destination's note of where migration ID came from
 *   ownership/ID.fenced.json        "not committed by operator decision" (the source's, and the destination's once told)
 *   ownership/ID.claimed.json       the source's note that the destination claimed its commit: no fence from then on
 *
 * Anything read back is checked like a request: a damaged file is an ERR_FERRY_INPUT naming it.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { FerryError } from '../errors.js';
import { MAX_THREADS } from '../crypto/backend.js';
import type { GuestConfig } from '../guest/types.js';
import { checkGuestConfig } from '../guest/config.js';
import { createFileAtomic, ensurePrivateDir, removeFileDurably, writeFileAtomic } from '../common/atomic-file.js';
import { MIGRATION_ID, HOST_NAME } from '../common/names.js';
import { type Limits, type ResolveDecision } from '../control/protocol.js';
import type { TlsCredentials } from '../control/tls.js';
import { bool, int, obj, oneOf, optional, str, array, type Check } from '../common/validate.js';
import { addressProblem } from '../common/address.js';
import type { MigrationNetwork } from '../common/address.js';

export const DEFAULT_LIMITS: Limits = { outgoing: 2, incoming: 2 };

/** The most migrations of one direction a host may run at once. */
export const MAX_MIGRATION_SLOTS = 64;

/**
 * The threads one migration may seal or open on: an equal share of the host's crypto-thread budget
 * among all the migrations it may run at once (outgoing + incoming slots), so that together they
 * never use more than the budget; at least 1, since a migration cannot seal on none. Undefined when
 * the host sets no budget (every core for each migration). docs/operations.md, "Limits".
 */
export function cryptoThreadsPerMigration(limits: Limits): number | undefined {
  if (limits.cryptoThreads === undefined) return undefined;
  return Math.max(1, Math.floor(limits.cryptoThreads / (limits.outgoing + limits.incoming)));
}

export interface HostConfig {
  name: string;
  /** Where the control API listens. */
  control: string;
  /** Migration networks in preference order. */
  networks: MigrationNetwork[];
  hasSriov: boolean;
  limits: Limits;
  /** Memory kept from guests (src/control/admission.ts); absent from host.json files written before it: the default. */
  memoryReserveBytes?: number;
}

const address =
  (allowZero: boolean): Check<string> =>
  (v, field) => {
    const problem = addressProblem(v, allowZero);
    if (problem) throw new FerryError('ERR_FERRY_INPUT', `${field}: ${problem}`);
    return v as string;
  };

export const checkHostConfig: Check<HostConfig> = obj({
  name: str({ pattern: HOST_NAME, describe: 'a host name' }),
  control: address(true),
  networks: array(obj({ listen: address(true), advertise: address(false) }), 16),
  hasSriov: bool,
  limits: obj({
    outgoing: int({ min: 1, max: MAX_MIGRATION_SLOTS }),
    incoming: int({ min: 1, max: MAX_MIGRATION_SLOTS }),
    // Optional: host.json files written before the crypto-thread budget existed have none.
    cryptoThreads: optional(int({ min: 1, max: MAX_THREADS })),
  }),
  memoryReserveBytes: optional(int({ min: 0, max: Number.MAX_SAFE_INTEGER })),
});

export interface GuestRecord {
  config: GuestConfig;
  createdAt: string;
  /** Set while the guest is arriving by this migration: it is not this host's until committed. */
  incoming?: string;
  /**
   * How many times the guest had moved when this host took it: 0 at `vm create`, one more with each
   * migration that brought it here. Of two hosts holding the same guest, the one with the lower
   * generation holds a stale copy (a state directory restored from before the guest moved on).
   * Absent from records written before it: 0.
   */
  generation?: number;
}

const checkGuestRecord: Check<GuestRecord> = obj({
  config: (v) => checkGuestConfig(v),
  createdAt: str({ max: 64 }),
  incoming: optional(str({ pattern: MIGRATION_ID })),
  generation: optional(int({ min: 0, max: Number.MAX_SAFE_INTEGER })),
});

export interface DecisionRecord {
  migrationId: string;
  guest: string;
  decision: ResolveDecision;
  at: string;
}

const checkDecision: Check<DecisionRecord> = obj({
  migrationId: str({ pattern: MIGRATION_ID }),
  guest: str({ max: 64 }),
  decision: oneOf<ResolveDecision>(['committed', 'not-committed']),
  at: str({ max: 64 }),
});

/** The source's note of where a guest is going, so a restarted agent knows whom to ask. */
export interface OutgoingRecord {
  migrationId: string;
  guest: string;
  destination: { host: string; control: string };
}

const checkOutgoing: Check<OutgoingRecord> = obj({
  migrationId: str({ pattern: MIGRATION_ID }),
  guest: str({ max: 64 }),
  destination: obj({ host: str({ pattern: HOST_NAME }), control: address(false) }),
});

/** The destination's note of where an incoming migration comes from: whom a restarted agent asks before it runs a left commit. */
export interface IncomingRecord {
  migrationId: string;
  guest: string;
  source: { host: string; control: string };
}

const checkIncoming: Check<IncomingRecord> = obj({
  migrationId: str({ pattern: MIGRATION_ID }),
  guest: str({ max: 64 }),
  source: obj({ host: str({ pattern: HOST_NAME }), control: address(false) }),
});

/** A decision about migration ID that is not the destination's own: the operator's fence, or the destination's claim of its commit. */
export interface SettlementRecord {
  migrationId: string;
  guest: string;
  at: string;
}

export interface HandoffRecord {
  migrationId: string;
  guest: string;
  to: string;
  at: string;
}

async function readJson<T>(file: string, check: Check<T>): Promise<T> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new FerryError('ERR_FERRY_NOT_FOUND', `${file} does not exist`);
    throw new FerryError('ERR_FERRY_INPUT', `cannot read ${file}: ${code}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new FerryError('ERR_FERRY_INPUT', `${file} is not valid JSON: the state directory is damaged`);
  }
  try {
    return check(value, path.basename(file));
  } catch (err) {
    throw new FerryError('ERR_FERRY_INPUT', `${file}: ${(err as Error).message}`);
  }
}

const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;

export class StateDir {
  private constructor(
    readonly dir: string,
    readonly config: HostConfig,
  ) {}

  static paths(dir: string) {
    return {
      config: path.join(dir, 'host.json'),
      caCert: path.join(dir, 'ca.crt'),
      cert: path.join(dir, 'host.crt'),
      key: path.join(dir, 'host.key'),
      guests: path.join(dir, 'guests'),
      ownership: path.join(dir, 'ownership'),
    };
  }

  get paths() {
    return StateDir.paths(this.dir);
  }

  /** Writes a fresh state directory's config (the certificate and key are already there). */
  static async create(dir: string, config: HostConfig): Promise<StateDir> {
    checkHostConfig(config, 'host.json');
    const p = StateDir.paths(dir);
    await ensurePrivateDir(dir);
    await ensurePrivateDir(p.guests);
    await ensurePrivateDir(p.ownership);
    await writeFileAtomic(p.config, json(config));
    return new StateDir(dir, config);
  }

  /** A state directory's host.json, checked, without touching anything there (what `host wait --dir` and `host unit` read). */
  static async readConfig(dir: string): Promise<HostConfig> {
    const d = path.resolve(dir);
    const p = StateDir.paths(d);
    const stat = await fs.stat(p.config).catch(() => null);
    if (!stat) throw new FerryError('ERR_FERRY_NOT_FOUND', `${d} is not a host directory (no host.json): run \`ferry host init\` first`);
    return readJson(p.config, checkHostConfig);
  }

  static async open(dir: string): Promise<StateDir> {
    const d = path.resolve(dir);
    const p = StateDir.paths(d);
    const config = await StateDir.readConfig(d);
    await ensurePrivateDir(d);
    await ensurePrivateDir(p.guests);
    await ensurePrivateDir(p.ownership);
    return new StateDir(d, config);
  }

  async credentials(): Promise<TlsCredentials> {
    return StateDir.credentials(this.dir);
  }

  /** The host's certificate, key and the cluster CA: what its agent serves with, and what it asks other agents with. */
  static async credentials(dir: string): Promise<TlsCredentials> {
    const p = StateDir.paths(path.resolve(dir));
    const read = async (file: string) => {
      try {
        return await fs.readFile(file);
      } catch (err) {
        throw new FerryError('ERR_FERRY_NOT_FOUND', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`);
      }
    };
    return { ca: await read(p.caCert), cert: await read(p.cert), key: await read(p.key) };
  }

  // ---- guests ---------------------------------------------------------------------------------

  guestDir(name: string): string {
    return path.join(this.paths.guests, name);
  }

  private guestRecordPath(name: string): string {
    return path.join(this.paths.guests, `${name}.json`);
  }

  async writeGuest(record: GuestRecord): Promise<void> {
    checkGuestRecord(record, 'guest record');
    await writeFileAtomic(this.guestRecordPath(record.config.name), json(record));
  }

  async readGuest(name: string): Promise<GuestRecord> {
    return readJson(this.guestRecordPath(name), checkGuestRecord);
  }

  async listGuests(): Promise<GuestRecord[]> {
    const names = (await fs.readdir(this.paths.guests)).filter((f) => f.endsWith('.json') && !f.startsWith('.'));
    const records = await Promise.all(names.map((f) => this.readGuest(f.slice(0, -'.json'.length))));
    return records.sort((a, b) => a.config.name.localeCompare(b.config.name));
  }

  async removeGuest(name: string): Promise<void> {
    await removeFileDurably(this.guestRecordPath(name));
  }

  // ---- ownership ------------------------------------------------------------------------------

  private ownershipPath(migrationId: string, kind: 'decision' | 'handoff' | 'outgoing' | 'incoming' | 'fenced' | 'claimed'): string {
    if (!MIGRATION_ID.test(migrationId)) throw new FerryError('ERR_FERRY_INPUT', `"${migrationId}" is not a migration id`);
    return path.join(this.paths.ownership, `${migrationId}.${kind}.json`);
  }

  /**
   * Records the destination's decision for a migration unless one is already recorded, and
   * returns the decision that stands (a fence learned from the source stands over both). The record is created with link(2), so of a commit and a
   * "not committed" answer racing for the same migration exactly one wins, and it is on disk
   * (fsync'd) before this resolves.
   */
  async decide(migrationId: string, guest: string, decision: ResolveDecision): Promise<ResolveDecision> {
    // The source's operator settled it without this host (told by the source): that stands over any record here.
    if (await this.settled('fenced', migrationId)) return 'not-committed';
    const record: DecisionRecord = { migrationId, guest, decision, at: new Date().toISOString() };
    const file = this.ownershipPath(migrationId, 'decision');
    if (await createFileAtomic(file, json(record))) return decision;
    return (await readJson(file, checkDecision)).decision;
  }

  /** The decision recorded for a migration, or null when none is. */
  async decision(migrationId: string): Promise<ResolveDecision | null> {
    return (await this.optional(() => readJson(this.ownershipPath(migrationId, 'decision'), checkDecision)))?.decision ?? null;
  }

  async writeOutgoing(record: OutgoingRecord): Promise<void> {
    await writeFileAtomic(this.ownershipPath(record.migrationId, 'outgoing'), json(record));
  }

  async readOutgoing(migrationId: string): Promise<OutgoingRecord> {
    return readJson(this.ownershipPath(migrationId, 'outgoing'), checkOutgoing);
  }

  async writeIncoming(record: IncomingRecord): Promise<void> {
    checkIncoming(record, 'incoming record');
    await writeFileAtomic(this.ownershipPath(record.migrationId, 'incoming'), json(record));
  }

  /** Where an incoming migration came from, or null when it was not noted (an older coordinator, another cluster). */
  async readIncoming(migrationId: string): Promise<IncomingRecord | null> {
    return this.optional(() => readJson(this.ownershipPath(migrationId, 'incoming'), checkIncoming));
  }

  /**
   * Records "not committed by operator decision" (fenced) or "the destination claimed its commit"
   * (claimed) for a migration: atomic, durable, 0600, before anyone acts on it.
   */
  async settle(kind: 'fenced' | 'claimed', migrationId: string, guest: string): Promise<void> {
    const record: SettlementRecord = { migrationId, guest, at: new Date().toISOString() };
    await writeFileAtomic(this.ownershipPath(migrationId, kind), json(record));
  }

  /** Whether a fence or a claim is recorded for the migration. */
  async settled(kind: 'fenced' | 'claimed', migrationId: string): Promise<boolean> {
    const check = obj({ migrationId: str({ pattern: MIGRATION_ID }), guest: str({ max: 64 }), at: str({ max: 64 }) });
    return (await this.optional(() => readJson(this.ownershipPath(migrationId, kind), check))) !== null;
  }

  private async optional<T>(read: () => Promise<T>): Promise<T | null> {
    try {
      return await read();
    } catch (err) {
      if ((err as FerryError).code === 'ERR_FERRY_NOT_FOUND') return null;
      throw err;
    }
  }

  /** The source's durable note that it handed `guest` to host `to`. */
  async recordHandoff(migrationId: string, guest: string, to: string): Promise<void> {
    const record: HandoffRecord = { migrationId, guest, to, at: new Date().toISOString() };
    await writeFileAtomic(this.ownershipPath(migrationId, 'handoff'), json(record));
  }
}
