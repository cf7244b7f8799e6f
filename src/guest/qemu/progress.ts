/**
 * QEMU's migration figures (query-migrate) as ferry's events and passes: a pass is what QEMU sent
 * between two syncs of its dirty log (dirty-sync-count), as ferry's engine counts its own.
 */
import type { ChannelStats } from '../../channel/types.js';
import type { MigrationEvent, PassReport } from '../../migration/types.js';
import type { MigrationInfo } from './qmp.js';

export class QemuProgress {
  readonly passes: PassReport[] = [];
  private pass = 0;
  private passStart = { at: 0, transferred: 0, normal: 0, duplicate: 0 };
  last: MigrationInfo | null = null;
  /** The acknowledged bytes' rate, measured over a second at least (acknowledgements come in bursts). */
  private rate = { at: 0, acked: 0, value: 0 };

  constructor(private readonly started: number) {}

  /**
   * Takes one query-migrate answer; returns the event to report, if any. `channel`: what the
   * destination acknowledged, so the event counts what arrived, not what QEMU handed to ferry
   * (up to a send window more), and its rate is the acknowledged bytes' since the last answer.
   */
  update(info: MigrationInfo, now: number, channel?: Pick<ChannelStats, 'bytesSent' | 'bytesAcknowledged'>): MigrationEvent | null {
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
    const inFlight = channel ? Math.max(0, channel.bytesSent - channel.bytesAcknowledged) : 0;
    const arrived = Math.max(0, ram.transferred - inFlight);
    let throughput = Math.round((ram.mbps * 1e6) / 8);
    if (channel) {
      const r = this.rate;
      if (r.at === 0 || now - r.at >= 1000) {
        if (r.at > 0) r.value = Math.round(((channel.bytesAcknowledged - r.acked) * 1000) / (now - r.at));
        r.at = now;
        r.acked = channel.bytesAcknowledged;
      }
      throughput = r.value;
    }
    return {
      type: 'pass',
      pass: Math.max(1, this.pass),
      bytesSent: arrived,
      bytesLeft: ram.remaining + (ram.transferred - arrived),
      throughput,
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

/**
 * The last migration status QEMU announced, and a wait for the next (or a poll interval, whichever
 * comes first). A status set while nobody waited ends the next wait at once: callers check the
 * state, then ask QEMU something, then wait, and an event that came during the question must not
 * leave them sleeping out the interval (with the guest paused, that interval is downtime).
 */
export class StatusWatch {
  value: string | null = null;
  private wake: (() => void) | null = null;
  private missed = false;

  set(status: string): void {
    this.value = status;
    if (this.wake) this.wake();
    else this.missed = true;
  }

  changed(ms: number): Promise<void> {
    if (this.missed) {
      this.missed = false;
      return Promise.resolve();
    }
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
