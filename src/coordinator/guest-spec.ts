/** A guest's config from what an operator types: `--workload kv:get=150000,set=50000` and so on. */
import { FerryError } from '../errors.js';
import type { Workload } from '../guest/types.js';
import { parseRate } from '../units.js';

/** `idle`, `kv:get=N,set=N`, or `dirty:RATE` (a rate in bytes a second: 200MB, 1GiB, 800Mbit). */
export function parseWorkload(text: string, option = '--workload'): Workload {
  if (text === 'idle') return { kind: 'idle' };
  const kv = /^kv:(.*)$/.exec(text);
  if (kv) {
    const fields = new Map<string, number>();
    for (const part of kv[1]!.split(',')) {
      const m = /^(get|set)=(\d+)$/.exec(part.trim());
      if (!m || fields.has(m[1]!)) throw new FerryError('ERR_FERRY_INPUT', `${option}: "${text}" is not kv:get=N,set=N`);
      fields.set(m[1]!, Number(m[2]));
    }
    if (!fields.has('get') || !fields.has('set')) throw new FerryError('ERR_FERRY_INPUT', `${option}: "${text}" needs both get=N and set=N`);
    return { kind: 'kv', getsPerSecond: fields.get('get')!, setsPerSecond: fields.get('set')! };
  }
  const dirty = /^dirty:(.+)$/.exec(text);
  if (dirty) return { kind: 'dirty', bytesPerSecond: parseRate(dirty[1]!, option) };
  throw new FerryError('ERR_FERRY_INPUT', `${option}: "${text}" is not idle, kv:get=N,set=N or dirty:RATE`);
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
