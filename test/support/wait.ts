/** Waiting for a condition that another process or a socket brings about, bounded in time. */
import { sleep } from '../../src/common/async.js';

type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>;

/**
 * Polls `check` every 50 ms until it gives a truthy value (which it resolves with) or `ms` pass,
 * then throws naming `what` (a function, to say what the wait saw at the end: a log, a state). A
 * `check` that throws ends the wait at once: a wait for what can no longer happen fails fast.
 */
export async function waitUntil<T>(check: () => T | Promise<T>, ms: number, what: string | (() => string)): Promise<Truthy<T>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    // A truthy value is Truthy<T>; TypeScript does not narrow a type parameter by truthiness.
    if (value) return value as Truthy<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await sleep(50);
  }
}
