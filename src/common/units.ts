/**
 * Sizes, rates and durations as operators type them: `1GiB`, `512MiB`, `2G` (GiB: memory sizes
 * are binary), `10Gbit`, `1.5Gb`, `200MB` (a rate in bytes), `500ms`, `10m`, `1h`. A value that
 * does not parse is an ERR_FERRY_INPUT error naming the option and what was wrong.
 */
import { FerryError } from '../errors.js';

const BYTE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 2 ** 10,
  kb: 1e3,
  kib: 2 ** 10,
  m: 2 ** 20,
  mb: 1e6,
  mib: 2 ** 20,
  g: 2 ** 30,
  gb: 1e9,
  gib: 2 ** 30,
  t: 2 ** 40,
  tb: 1e12,
  tib: 2 ** 40,
};

const BIT_UNITS: Record<string, number> = {
  bit: 1,
  kbit: 1e3,
  mbit: 1e6,
  gbit: 1e9,
  tbit: 1e12,
  kibit: 2 ** 10,
  mibit: 2 ** 20,
  gibit: 2 ** 30,
};

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function split(option: string, text: string): [number, string] {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z/]*)\s*$/.exec(String(text));
  if (!m) throw new FerryError('ERR_FERRY_INPUT', `${option}: "${text}" is not a number with a unit`);
  return [Number(m[1]), m[2]!];
}

/** A size in bytes: `1GiB`, `512M`, `4096`. Letters without `i` before B are decimal (1GB = 10^9). */
export function parseSize(text: string | number, option = 'size'): number {
  if (typeof text === 'number') return checkWhole(option, text, String(text));
  const [n, unit] = split(option, text);
  const scale = BYTE_UNITS[unit.toLowerCase()];
  if (scale === undefined) {
    throw new FerryError('ERR_FERRY_INPUT', `${option}: unknown unit "${unit}" in "${text}" (use B, KiB, MiB, GiB, TiB, or KB, MB, GB)`);
  }
  return checkWhole(option, Math.round(n * scale), text);
}

/**
 * A rate in bytes a second: `10Gbit` / `10Gb` (bits: Gb is Gbit here, as networks are rated),
 * `1.25GB` (bytes), `200MB`, `200MiB`.
 */
export function parseRate(text: string | number, option = 'rate'): number {
  if (typeof text === 'number') return checkWhole(option, text, String(text));
  const [n, rawUnit] = split(option, text);
  const unit = rawUnit.replace(/(\/s|ps)$/i, '');
  // A lower-case b is bits, as links are rated (10Gb, 100Mb); `bit` is bits in any case.
  const bits = /^([kmgt]?)b$/i.exec(unit) && unit.endsWith('b') ? `${unit.slice(0, -1).toLowerCase()}bit` : unit.toLowerCase();
  const bitScale = /bit$/.test(bits) ? BIT_UNITS[bits] : undefined;
  if (bitScale !== undefined) return checkWhole(option, Math.round((n * bitScale) / 8), text);
  const byteScale = BYTE_UNITS[unit.toLowerCase()];
  if (byteScale === undefined) {
    throw new FerryError('ERR_FERRY_INPUT', `${option}: unknown unit "${rawUnit}" in "${text}" (use e.g. 10Gbit, 1Gb, 200MB, 200MiB)`);
  }
  return checkWhole(option, Math.round(n * byteScale), text);
}

/** A duration in milliseconds: `500ms`, `2s`, `10m`, `1h`; a bare number is milliseconds. */
export function parseDuration(text: string | number, option = 'duration'): number {
  if (typeof text === 'number') return checkWhole(option, text, String(text));
  const [n, unit] = split(option, text);
  const scale = unit === '' ? 1 : DURATION_UNITS[unit.toLowerCase()];
  if (scale === undefined) {
    throw new FerryError('ERR_FERRY_INPUT', `${option}: unknown unit "${unit}" in "${text}" (use ms, s, m or h)`);
  }
  return checkWhole(option, Math.round(n * scale), text);
}

function checkWhole(option: string, value: number, text: string): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new FerryError('ERR_FERRY_INPUT', `${option}: "${text}" is out of range`);
  }
  return value;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

/** Bytes a second as a network rate, `9.42 Gbit/s`. */
export function formatRate(bytesPerSecond: number): string {
  const bits = bytesPerSecond * 8;
  if (bits >= 1e9) return `${(bits / 1e9).toFixed(2)} Gbit/s`;
  if (bits >= 1e6) return `${(bits / 1e6).toFixed(1)} Mbit/s`;
  return `${(bits / 1e3).toFixed(0)} kbit/s`;
}

/**
 * A duration as an operator types one (`500ms`, `1.5s`, `10m`, `1h30m`), for messages about a
 * limit they set: `--timeout 10m` comes back as `10m`, not as 600000 ms. parseDuration reads it.
 */
export function formatLimit(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(2))}s`;
  const s = Math.round(ms / 1000);
  const [h, m, sec] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${sec ? `${sec}s` : ''}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`;
}
