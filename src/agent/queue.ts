/**
 * Per-host migration limits: a counting semaphore with a first-come-first-served queue. Holders
 * beyond the limit wait in order and are told their place, so the coordinator can say "queued".
 */
import { FerryError } from '../errors.js';

export type Release = () => void;

interface Waiter {
  grant(release: Release): void;
  onPosition?: (position: number) => void;
}

export class SlotQueue {
  private active = 0;
  private readonly waiters: Waiter[] = [];

  constructor(readonly limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1)
      throw new FerryError('ERR_FERRY_INPUT', `a limit must be a whole number of at least 1, not ${limit}`);
  }

  get running(): number {
    return this.active;
  }

  get queued(): number {
    return this.waiters.length;
  }

  /**
   * Resolves with a release function once a slot is free. While waiting, `onPosition` is called
   * with the place in the queue (1: next), at first and whenever it changes. Aborting `signal`
   * while waiting leaves the queue and rejects with the signal's reason.
   */
  acquire(options: { signal?: AbortSignal; onPosition?: (position: number) => void } = {}): Promise<Release> {
    const { signal, onPosition } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.active < this.limit && this.waiters.length === 0) return Promise.resolve(this.grant());
    return new Promise<Release>((resolve, reject) => {
      const waiter: Waiter = {
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
        onPosition,
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i !== -1) {
          this.waiters.splice(i, 1);
          this.announce(i);
        }
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
      onPosition?.(this.waiters.length);
    });
  }

  /**
   * Takes a slot at once, past the limit if need be: for a migration that already runs (one a
   * restarted agent adopts), which the limit must count but cannot hold back.
   */
  occupy(): Release {
    return this.grant();
  }

  private grant(): Release {
    this.active++;
    let released = false;
    return () => {
      if (released) return; // releasing twice must not free someone else's slot
      released = true;
      this.active--;
      // Under the limit again (a slot occupied past it may have left the count above).
      const next = this.active < this.limit ? this.waiters.shift() : undefined;
      if (next) {
        next.grant(this.grant());
        this.announce(0);
      }
    };
  }

  /** Tells every waiter from index `from` on its new place. */
  private announce(from: number): void {
    for (let i = from; i < this.waiters.length; i++) this.waiters[i]!.onPosition?.(i + 1);
  }
}
