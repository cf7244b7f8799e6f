/**
 * The keys of one direction of a channel, one per key epoch: each derived when first needed and
 * destroyed once retired (no frame of its epoch can still be sealed or opened) and no seal or open
 * is still running on it. Epoch 0's key belongs to the key schedule, which keeps it for HELLOs.
 */
import { FerryError } from '../errors.js';
import type { AeadKey } from '../crypto/backend.js';
import type { Direction, KeySchedule } from '../crypto/key-schedule.js';

interface Held {
  key: Promise<AeadKey>;
  users: number;
  retired: boolean;
}

export class EpochKeys {
  private readonly held = new Map<number, Held>();
  /** Epochs below this are retired: never derived again. */
  private floorEpoch = 0;

  constructor(
    private readonly schedule: KeySchedule,
    readonly direction: Direction,
  ) {}

  /** The lowest epoch whose key may still be used. */
  get floor(): number {
    return this.floorEpoch;
  }

  /** Runs `work` with epoch `epoch`'s key, which stays alive until `work` settles. */
  async use<T>(epoch: number, work: (key: AeadKey) => Promise<T>): Promise<T> {
    const held = this.acquire(epoch);
    try {
      return await work(await held.key);
    } finally {
      held.release();
    }
  }

  /** Epoch `epoch`'s key, kept alive until release(): taken at once, so no retirement comes in between. */
  acquire(epoch: number): { key: Promise<AeadKey>; release: () => void } {
    // Epoch 0's key stays for HELLOs; the receiver refuses epoch-0 frames past the floor before they get here.
    if (epoch < this.floorEpoch && epoch !== 0) throw new FerryError('ERR_FERRY_INTERNAL', `key epoch ${epoch} is retired`);
    let h = this.held.get(epoch);
    if (!h) {
      h = { key: this.schedule.key(this.direction, epoch), users: 0, retired: false };
      // A failed import is reported by the use that awaits it, not as an unhandled rejection.
      h.key.catch(() => {});
      this.held.set(epoch, h);
    }
    const held = h;
    held.users++;
    let released = false;
    return {
      key: held.key,
      release: () => {
        if (released) return;
        released = true;
        held.users--;
        if (held.retired && held.users === 0) this.drop(epoch, held);
      },
    };
  }

  /** Retires every epoch below `epoch`: their keys are destroyed as soon as nothing uses them. */
  retireBelow(epoch: number): void {
    if (epoch <= this.floorEpoch) return;
    this.floorEpoch = epoch;
    for (const [e, h] of this.held) {
      if (e >= epoch) continue;
      h.retired = true;
      if (h.users === 0) this.drop(e, h);
    }
  }

  destroy(): void {
    this.retireBelow(Number.MAX_SAFE_INTEGER);
  }

  private drop(epoch: number, h: Held): void {
    this.held.delete(epoch);
    if (epoch !== 0)
      void h.key.then(
        (k) => k.destroy(),
        () => {},
      );
  }
}
