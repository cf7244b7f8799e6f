/**
 * The synthetic driver's part of a guest config: its memory limits, an optional disk, and the
 * workload, as operators write it (`--workload kv:get=150000,set=50000`) and as it arrives over
 * the control API.
 */
import { FerryError } from '../../errors.js';
import { parseRate } from '../../common/units.js';
import { bad, bool, defaulted, int, obj, oneOf, optional, type Check } from '../../common/validate.js';
import type { Workload } from '../types.js';
import { BLOCK_SIZE, MAX_DISK_BYTES, MAX_MEMORY_BYTES, PAGE_SIZE } from './layout.js';

const MIN_MEMORY_BYTES = 1 << 20;
const MAX_OPS = 10_000_000;
const MAX_DIRTY_BYTES_PER_SECOND = 100 * 2 ** 30;

const WORKLOADS = {
  idle: obj({ kind: oneOf(['idle'] as const) }),
  kv: obj({ kind: oneOf(['kv'] as const), getsPerSecond: int({ min: 0, max: MAX_OPS }), setsPerSecond: int({ min: 0, max: MAX_OPS }) }),
  dirty: obj({
    kind: oneOf(['dirty'] as const),
    bytesPerSecond: int({ min: 0, max: MAX_DIRTY_BYTES_PER_SECOND }),
    fill: optional(bool),
  }),
};

export const checkWorkload: Check<Workload> = (v, field) => {
  const kind = typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as { kind?: unknown }).kind : undefined;
  if (typeof kind !== 'string' || !Object.prototype.hasOwnProperty.call(WORKLOADS, kind)) {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(field, 'must be an object');
    bad(`${field}.kind`, 'must be idle, kv or dirty');
  }
  return WORKLOADS[kind as keyof typeof WORKLOADS](v, field) as Workload;
};

/** The synthetic driver's config fields (the common ones are src/guest/config.ts's). */
export const SYNTHETIC_FIELDS = {
  memoryBytes: int({ min: MIN_MEMORY_BYTES, max: MAX_MEMORY_BYTES, multipleOf: PAGE_SIZE }),
  diskBytes: defaulted(int({ min: 0, max: MAX_DISK_BYTES, multipleOf: BLOCK_SIZE }), 0),
  workload: checkWorkload,
};

/**
 * `idle`, `kv:get=N,set=N`, `dirty:RATE` or `dirty:RATE,fill` (RATE as parseRate reads it: 200MB,
 * 1Gbit; `fill`: memory and disk written once first).
 */
export function parseWorkload(text: string): Workload {
  const t = text.trim();
  const fail = () =>
    new FerryError('ERR_FERRY_INPUT', `workload "${text}": use idle, kv:get=N,set=N or dirty:RATE[,fill] (e.g. dirty:200MB)`);
  if (t === 'idle') return { kind: 'idle' };
  const kv = /^kv:get=(\d+),set=(\d+)$/.exec(t);
  if (kv) return checkWorkload({ kind: 'kv', getsPerSecond: Number(kv[1]), setsPerSecond: Number(kv[2]) }, 'workload');
  const dirty = /^dirty:(.+?)(,fill)?$/.exec(t);
  if (dirty) {
    const bytesPerSecond = parseRate(dirty[1]!, 'workload dirty rate');
    return checkWorkload({ kind: 'dirty', bytesPerSecond, ...(dirty[2] ? { fill: true } : {}) }, 'workload');
  }
  throw fail();
}

export function formatWorkload(w: Workload): string {
  switch (w.kind) {
    case 'idle':
      return 'idle';
    case 'kv':
      return `kv:get=${w.getsPerSecond},set=${w.setsPerSecond}`;
    case 'dirty':
      return `dirty:${w.bytesPerSecond}B${w.fill ? ',fill' : ''}`;
  }
}
