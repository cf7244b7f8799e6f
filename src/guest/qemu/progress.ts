/**
 * QEMU's migration figures (query-migrate) as ferry's events and passes: a pass is what QEMU sent
 * between two syncs of its dirty log (dirty-sync-count), as ferry's engine counts its own.
 */
import type { MigrationEvent, PassReport } from '../../migration/types.js';
import type { MigrationInfo } from './qmp.js';

export class QemuProgress {
  readonly passes: PassReport[] = [];
  private pass = 0;
  private passStart = { at: 0, transferred: 0, normal: 0, duplicate: 0 };
  last: MigrationInfo | null = null;

  constructor(private readonly started: number) {}

  /** Takes one query-migrate answer; returns the event to report, if any. */
  update(info: MigrationInfo, now: number): MigrationEvent | null {
    this.last = info;
    const ram = info.ram;
    if (!ram) return null;
    const sync = ram.dirtySyncCount;
    if (sync > this.pass) {
      // Sync N closes pass N (QEMU's first sync starts the first pass: count 1 while it runs).
      if (this.pass > 0) this.closePass(now, ram.transferred, ram.normal, ram.duplicate);
      this.pass = sync;
      this.passStart = { at: now, transferred: ram.transferred, normal: ram.normal, duplicate: ram.duplicate };
    }
    return {
      type: 'pass',
      pass: Math.max(1, this.pass),
      bytesSent: ram.transferred,
      bytesLeft: ram.remaining,
      throughput: Math.round((ram.mbps * 1e6) / 8),
      dirtyRate: ram.dirtyPagesRate * ram.pageSize,
      zeroPagesSkipped: ram.duplicate,
      throttlePercent: info.cpuThrottlePercentage ?? 0,
      elapsedMs: Math.round(now - this.started),
    };
  }

  /** The last pass, closed at the end of the migration. */
  finish(now: number): void {
    const ram = this.last?.ram;
    if (ram && this.pass > 0) this.closePass(now, ram.transferred, ram.normal, ram.duplicate);
    this.pass = Number.POSITIVE_INFINITY;
  }

  private closePass(now: number, transferred: number, normal: number, duplicate: number): void {
    const s = this.passStart;
    this.passes.push({
      pass: this.passes.length + 1,
      pages: normal - s.normal,
      zeroPages: duplicate - s.duplicate,
      blocks: 0,
      zeroBlocks: 0,
      bytes: transferred - s.transferred,
      durationMs: Math.round(now - s.at),
    });
  }
}

/** QEMU's event timestamps are wall-clock seconds and microseconds. */
export function wallMs(t: { seconds: number; microseconds: number }): number {
  return t.seconds * 1000 + t.microseconds / 1000;
}

/** The last migration status QEMU announced, and a wait for the next (or a poll interval, whichever comes first). */
export class StatusWatch {
  value: string | null = null;
  private wake: (() => void) | null = null;

  set(status: string): void {
    this.value = status;
    this.wake?.();
  }

  changed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }
}
