/**
 * The one way ferry checks untrusted input — control API requests, guest-socket requests, guest
 * configs, state files, the cluster file: each check returns the value with its type or throws a
 * FieldError (ERR_FERRY_INPUT) naming the field and what is wrong. Checks compose (obj, array,
 * record, optional), so each message's shape is written once and both sides check the same.
 */
import { FerryError } from '../errors.js';

export type Check<T> = (value: unknown, field: string) => T;

/** A bad field: `field` is its path (`hosts.a.networks[1]`); `at` says which node is wrong. */
export class FieldError extends FerryError {
  constructor(
    readonly field: string,
    readonly problem: string,
    /** value: the field's value; key: its name (an unknown or bad key); missing: absent from its parent. */
    readonly at: 'value' | 'key' | 'missing' = 'value',
  ) {
    super('ERR_FERRY_INPUT', field ? `${field}: ${problem}` : problem);
  }
}

export function bad(field: string, problem: string, at: FieldError['at'] = 'value'): never {
  throw new FieldError(field, problem, at);
}

/** The path of `key` inside `field` (the root has no name: ''). */
const sub = (field: string, key: string) => (field ? `${field}.${key}` : key);

export const str =
  (opts: { pattern?: RegExp; max?: number; describe?: string; nonEmpty?: boolean } = {}): Check<string> =>
  (v, field) => {
    if (typeof v !== 'string') bad(field, opts.nonEmpty ? 'must be a non-empty string' : 'must be a string');
    if (opts.nonEmpty && v === '') bad(field, 'must be a non-empty string');
    if (v.length > (opts.max ?? 4096)) bad(field, `is longer than ${opts.max ?? 4096} characters`);
    if (opts.pattern && !opts.pattern.test(v)) bad(field, `"${v.slice(0, 80)}" is not ${opts.describe ?? `like ${opts.pattern}`}`);
    return v;
  };

export const int =
  (opts: { min?: number; max?: number; multipleOf?: number } = {}): Check<number> =>
  (v, field) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) bad(field, 'must be a whole number');
    if (opts.min !== undefined && v < opts.min) bad(field, `must be at least ${opts.min}`);
    if (opts.max !== undefined && v > opts.max) bad(field, `must be at most ${opts.max}`);
    if (opts.multipleOf && v % opts.multipleOf !== 0) bad(field, `must be a multiple of ${opts.multipleOf}`);
    return v;
  };

export const bool: Check<boolean> = (v, field) => (typeof v === 'boolean' ? v : bad(field, 'must be true or false'));

export const oneOf =
  <T extends string>(values: readonly T[]): Check<T> =>
  (v, field) =>
    typeof v === 'string' && (values as readonly string[]).includes(v) ? (v as T) : bad(field, `must be one of ${values.join(', ')}`);

export const array =
  <T>(item: Check<T>, max = 1000, min = 0): Check<T[]> =>
  (v, field) => {
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

/** An optional field that takes `fallback` when absent (undefined); null or anything else is checked as given. */
export const defaulted = <T>(check: Check<T>, fallback: T): Check<T> & { optional: true } => {
  const c = ((v: unknown, field: string) => (v === undefined ? fallback : check(v, field))) as Check<T> & { optional: true };
  c.optional = true;
  return c;
};

/** A field that must not be there: refused with `problem`, its value never shown. */
export const absent = (problem: string) => optional<never>((_, field) => bad(field, problem));

type Shape = Record<string, Check<unknown>>;
type Out<S extends Shape> = { [K in keyof S as S[K] extends { optional: true } ? never : K]: ReturnType<S[K]> } & {
  [K in keyof S as S[K] extends { optional: true } ? K : never]?: Exclude<ReturnType<S[K]>, undefined>;
};

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const has = (o: object, key: string) => Object.prototype.hasOwnProperty.call(o, key);

/** A JSON object with exactly these fields (unknown fields are refused: they are a caller's typo). */
export const obj =
  <S extends Shape>(shape: S): Check<Out<S>> =>
  (v, field) => {
    if (!isObject(v)) bad(field, 'must be an object');
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(v)) {
      if (!has(shape, key)) bad(sub(field, key), `unknown field (known: ${Object.keys(shape).join(', ') || 'none'})`, 'key');
    }
    for (const [key, check] of Object.entries(shape)) {
      const given = has(v, key) ? v[key] : undefined;
      if (given === undefined && !(check as { optional?: true }).optional) bad(sub(field, key), 'is missing', 'missing');
      const value = check(given, sub(field, key));
      if (value !== undefined) out[key] = value;
    }
    return out as Out<S>;
  };

/** A JSON object used as a map: every key passes `key`, every value `value`. */
export const record =
  <T>(key: Check<string>, value: Check<T>, max = 1000): Check<Map<string, T>> =>
  (v, field) => {
    if (!isObject(v)) bad(field, 'must be an object');
    const entries = Object.entries(v);
    if (entries.length > max) bad(field, `has more than ${max} entries`);
    const out = new Map<string, T>();
    for (const [k, x] of entries) {
      try {
        key(k, sub(field, k));
      } catch (err) {
        if (err instanceof FieldError) bad(err.field, err.problem, 'key');
        throw err;
      }
      out.set(k, value(x, sub(field, k)));
    }
    return out;
  };

/** A type guard from a check, for code that branches instead of throwing. */
export const guard =
  <T>(check: Check<T>) =>
  (v: unknown): v is T => {
    try {
      check(v, 'value');
      return true;
    } catch {
      return false;
    }
  };
