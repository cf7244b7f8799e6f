/**
 * Guest configs as operators write them (`--workload kv:get=150000,set=50000`) and as they arrive
 * over the control socket: parsed and checked here, so a bad one is a coded ERR_FERRY_INPUT
 * before any process starts.
 */
import { FerryError } from '../errors.js';
import { parseRate } from '../units.js';
import { BLOCK_SIZE, MAX_DISK_BYTES, MAX_MEMORY_BYTES, PAGE_SIZE } from './synthetic/layout.js';
import { GUEST_NAME, type GuestConfig, type Workload } from './types.js';

const MIN_MEMORY_BYTES = 1 << 20;
const MAX_OPS = 10_000_000;

function bad(message: string): FerryError {
  return new FerryError('ERR_FERRY_INPUT', message);
}

/** `idle`, `kv:get=N,set=N`, `dirty:RATE` (RATE as parseRate reads it: 200MB, 1Gbit). */
export function parseWorkload(text: string): Workload {
  const t = text.trim();
  if (t === 'idle') return { kind: 'idle' };
  const kv = /^kv:get=(\d+),set=(\d+)$/.exec(t);
  if (kv) return checkWorkload({ kind: 'kv', getsPerSecond: Number(kv[1]), setsPerSecond: Number(kv[2]) });
  const dirty = /^dirty:(.+)$/.exec(t);
  if (dirty) return checkWorkload({ kind: 'dirty', bytesPerSecond: parseRate(dirty[1]!, 'workload dirty rate') });
  throw bad(`workload "${text}": use idle, kv:get=N,set=N or dirty:RATE (e.g. dirty:200MB)`);
}

export function formatWorkload(w: Workload): string {
  switch (w.kind) {
    case 'idle':
      return 'idle';
    case 'kv':
      return `kv:get=${w.getsPerSecond},set=${w.setsPerSecond}`;
    case 'dirty':
      return `dirty:${w.bytesPerSecond}B`;
  }
}

function count(v: unknown, name: string, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max) throw bad(`${name} must be an integer from 0 to ${max}`);
  return v;
}

/**
 * Refuses a field `o` has beyond `known`: a misspelt setting (`encryptedMigraton: required`) must not
 * pass as if it were absent and leave the default in its place.
 */
export function onlyKnown(o: object, known: readonly string[], what: string): void {
  const extra = Object.keys(o).find((k) => !known.includes(k));
  if (extra !== undefined) throw bad(`${what}: unknown field ${JSON.stringify(extra.slice(0, 40))}`);
}

/** An absent field (undefined) takes its default; null or anything else is checked as given. */
function orDefault(v: unknown, fallback: unknown): unknown {
  return v === undefined ? fallback : v;
}

const WORKLOAD_FIELDS = { idle: ['kind'], kv: ['kind', 'getsPerSecond', 'setsPerSecond'], dirty: ['kind', 'bytesPerSecond'] } as const;
const CONFIG_FIELDS = ['name', 'driver', 'memoryBytes', 'diskBytes', 'workload', 'nic', 'encryptedMigration'] as const;

export function checkWorkload(value: unknown): Workload {
  const w = value as Record<string, unknown> | null;
  if (!w || typeof w !== 'object' || Array.isArray(w)) throw bad('workload must be an object');
  if (w.kind !== 'idle' && w.kind !== 'kv' && w.kind !== 'dirty') throw bad(`workload kind must be idle, kv or dirty; got ${String(w.kind).slice(0, 40)}`);
  onlyKnown(w, WORKLOAD_FIELDS[w.kind], `workload ${w.kind}`);
  switch (w.kind) {
    case 'idle':
      return { kind: 'idle' };
    case 'kv':
      return { kind: 'kv', getsPerSecond: count(w.getsPerSecond, 'kv gets a second', MAX_OPS), setsPerSecond: count(w.setsPerSecond, 'kv sets a second', MAX_OPS) };
    case 'dirty':
      return { kind: 'dirty', bytesPerSecond: count(w.bytesPerSecond, 'dirty bytes a second', 100 * 2 ** 30) };
  }
}

/** The config part of something that carries one (a GuestInfo: config plus where and how it runs). */
export function configOf(g: GuestConfig): GuestConfig {
  return { name: g.name, driver: g.driver, memoryBytes: g.memoryBytes, diskBytes: g.diskBytes, workload: g.workload, nic: g.nic, encryptedMigration: g.encryptedMigration };
}

/** A complete, checked copy of `value`; throws ERR_FERRY_INPUT naming the first bad field. */
export function checkGuestConfig(value: unknown): GuestConfig {
  const c = value as Record<string, unknown> | null;
  if (!c || typeof c !== 'object' || Array.isArray(c)) throw bad('guest config must be an object');
  onlyKnown(c, CONFIG_FIELDS, 'guest config');
  if (typeof c.name !== 'string' || !GUEST_NAME.test(c.name)) throw bad(`guest name must match ${GUEST_NAME}`);
  if (c.driver !== 'synthetic') throw bad(`this guest driver runs synthetic guests; got driver ${String(c.driver).slice(0, 40)}`);
  const memoryBytes = count(c.memoryBytes, 'memoryBytes', MAX_MEMORY_BYTES);
  if (memoryBytes < MIN_MEMORY_BYTES || memoryBytes % PAGE_SIZE !== 0) throw bad(`memoryBytes must be at least 1 MiB and a multiple of ${PAGE_SIZE}`);
  const diskBytes = count(orDefault(c.diskBytes, 0), 'diskBytes', MAX_DISK_BYTES);
  if (diskBytes % BLOCK_SIZE !== 0) throw bad(`diskBytes must be a multiple of ${BLOCK_SIZE} (the disk block)`);
  const nic = orDefault(c.nic, 'virtio');
  if (nic !== 'virtio' && nic !== 'sriov') throw bad('nic must be virtio or sriov');
  const enc = orDefault(c.encryptedMigration, 'opportunistic');
  if (enc !== 'disabled' && enc !== 'opportunistic' && enc !== 'required') throw bad('encryptedMigration must be disabled, opportunistic or required');
  return { name: c.name, driver: 'synthetic', memoryBytes, diskBytes, workload: checkWorkload(c.workload), nic, encryptedMigration: enc };
}
