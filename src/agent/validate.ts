/**
 * Checks for untrusted JSON (control API requests, state files): each check returns the value with
 * its type or throws ERR_FERRY_INPUT naming the field and what is wrong. Composed per message in
 * protocol.ts, so the agent and the CLI check the same shapes.
 */
import { FerryError } from '../errors.js';

export type Check<T> = (value: unknown, field: string) => T;

function bad(field: string, problem: string): never {
  throw new FerryError('ERR_FERRY_INPUT', `${field}: ${problem}`);
}

export const str = (opts: { pattern?: RegExp; max?: number; describe?: string } = {}): Check<string> => (v, field) => {
  if (typeof v !== 'string') bad(field, 'must be a string');
  if (v.length > (opts.max ?? 4096)) bad(field, `is longer than ${opts.max ?? 4096} characters`);
  if (opts.pattern && !opts.pattern.test(v)) bad(field, `"${v.slice(0, 80)}" is not ${opts.describe ?? `like ${opts.pattern}`}`);
  return v;
};

export const int = (opts: { min?: number; max?: number; multipleOf?: number } = {}): Check<number> => (v, field) => {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) bad(field, 'must be a whole number');
  if (opts.min !== undefined && v < opts.min) bad(field, `must be at least ${opts.min}`);
  if (opts.max !== undefined && v > opts.max) bad(field, `must be at most ${opts.max}`);
  if (opts.multipleOf && v % opts.multipleOf !== 0) bad(field, `must be a multiple of ${opts.multipleOf}`);
  return v;
};

export const bool: Check<boolean> = (v, field) => (typeof v === 'boolean' ? v : bad(field, 'must be true or false'));

export const oneOf = <T extends string>(values: readonly T[]): Check<T> => (v, field) =>
  typeof v === 'string' && (values as readonly string[]).includes(v) ? (v as T) : bad(field, `must be one of ${values.join(', ')}`);

export const array = <T>(item: Check<T>, max = 1000, min = 0): Check<T[]> => (v, field) => {
  if (!Array.isArray(v)) bad(field, 'must be a list');
  if (v.length > max) bad(field, `has more than ${max} items`);
  if (v.length < min) bad(field, `needs at least ${min} item${min === 1 ? '' : 's'}`);
  return v.map((x, i) => item(x, `${field}[${i}]`));
};

export const optional = <T>(check: Check<T>): Check<T | undefined> & { optional: true } => {
  const c = ((v: unknown, field: string) => (v === undefined ? undefined : check(v, field))) as Check<T | undefined> & { optional: true };
  c.optional = true;
  return c;
};

/** A field that must not be there: refused with `problem`, its value never shown. */
export const absent = (problem: string) => optional<never>((_, field) => bad(field, problem));

type Shape = Record<string, Check<unknown>>;
type Out<S extends Shape> = { [K in keyof S as S[K] extends { optional: true } ? never : K]: ReturnType<S[K]> } & {
  [K in keyof S as S[K] extends { optional: true } ? K : never]?: Exclude<ReturnType<S[K]>, undefined>;
};

/** A JSON object with exactly these fields (unknown fields are refused: they are a caller's typo). */
export const obj = <S extends Shape>(shape: S): Check<Out<S>> => (v, field) => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(field, 'must be an object');
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(v)) if (!Object.prototype.hasOwnProperty.call(shape, key)) bad(`${field}.${key}`, 'unknown field');
  for (const [key, check] of Object.entries(shape)) {
    const value = check((v as Record<string, unknown>)[key], `${field}.${key}`);
    if (value !== undefined) out[key] = value;
  }
  return out as Out<S>;
};

/** A type guard from a check, for code that branches instead of throwing. */
export const guard = <T>(check: Check<T>) => (v: unknown): v is T => {
  try {
    check(v, 'value');
    return true;
  } catch {
    return false;
  }
};
