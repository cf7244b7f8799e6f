/**
 * Migration progress as people and scripts see it: with --json every event is one JSON line on
 * stdout; on a terminal, a cli-progress bar per guest on stderr (pass, sent and left, throughput,
 * dirty rate, ETA, queued or running); otherwise plain lines on stderr, at most one a second per
 * guest while a pass runs, and one per change of state.
 */
import cliProgress from 'cli-progress';
import type { CoordinatorEvent } from '../coordinator/migrate.js';
import type { EvacuationEvent } from '../coordinator/evacuate.js';
import { formatBytes, formatDuration, formatRate } from '../common/units.js';
import type { Output } from './output.js';

const PLAIN_INTERVAL_MS = 1000;

interface Row {
  bar: cliProgress.SingleBar | null;
  percent: number;
  status: string;
  lastPlain: number;
}

export class MigrationProgress {
  private readonly multibar: cliProgress.MultiBar | null;
  private readonly rows = new Map<string, Row>();
  private readonly width: number;

  /** `guests`: the names to align; shown as queued from the start when `queued` (evacuate). */
  constructor(
    private readonly output: Output,
    guests: readonly string[],
    queued = false,
  ) {
    this.width = Math.max(4, ...guests.map((g) => g.length));
    this.multibar = output.interactive
      ? new cliProgress.MultiBar(
          {
            stream: output.err,
            format: '{vm} {bar} {pct}% {status}',
            barsize: 20,
            hideCursor: true,
            clearOnComplete: false,
            stopOnComplete: false,
            autopadding: true,
            fps: 8,
          },
          cliProgress.Presets.shades_classic,
        )
      : null;
    if (queued) for (const g of guests) this.set(g, 0, 'waiting for its turn');
  }

  /** A line for people that does not tear the bars (cli-progress.log on a terminal). */
  note(line: string): void {
    if (this.output.json) return;
    if (this.multibar) this.multibar.log(`${line}\n`);
    else this.output.info(line);
  }

  /** A line for the operator about what this command does, on stderr also under --json (`ferry: ...`). */
  notice(line: string): void {
    if (this.multibar) this.multibar.log(`${this.output.errColor.bold('ferry:')} ${line}\n`);
    else this.output.err.write(`ferry: ${line}\n`);
  }

  private warn(line: string): void {
    if (this.multibar) this.multibar.log(`${this.output.errColor.yellow('warning:')} ${line}\n`);
    else this.output.warn(line);
  }

  private set(vm: string, percent: number, status: string, force = true): void {
    let row = this.rows.get(vm);
    if (!row) {
      row = { bar: null, percent, status, lastPlain: -Infinity };
      this.rows.set(vm, row);
      if (this.multibar) row.bar = this.multibar.create(100, 0, { vm: vm.padEnd(this.width), pct: '  0', status });
    }
    row.percent = percent;
    row.status = status;
    if (row.bar) row.bar.update(Math.round(percent), { vm: vm.padEnd(this.width), pct: String(Math.floor(percent)).padStart(3), status });
    else if (!this.output.json) {
      const now = performance.now();
      // Changes of state always; pass progress at most once a second (the first at once).
      if (force) this.output.info(`${vm}: ${status}`);
      else if (now - row.lastPlain >= PLAIN_INTERVAL_MS) {
        row.lastPlain = now;
        this.output.info(`${vm}: ${status}`);
      }
    }
  }

  /** The coordinator's and the agents' events; under --json each is printed as it is. */
  event(e: CoordinatorEvent | Extract<EvacuationEvent, { type: 'queued' }>): void {
    // A fall-back to plain text is shown to people even under --json (stderr stays human).
    if (e.type === 'decided' && e.warning) this.warn(`${e.vm}: ${e.warning}`);
    // Said before the move starts, to people even under --json: the guest will have another NIC there.
    if (e.type === 'nic-fallback')
      this.warn(`${e.vm}: ${e.host} has no passthrough NIC: the guest gets the emulated one (${e.nic}) there, and keeps it`);
    if (e.type === 'failover')
      this.warn(
        `${e.vm}: migration network ${e.from} lost; carrying on over ${e.to}${e.bytesResent > 0 ? ` (${formatBytes(e.bytesResent)} sent again)` : ''}`,
      );
    if (e.type === 'not-running')
      this.warn(
        `${e.vm}: moved to ${e.host}, but it is ${e.state} there now: its guest process ended after the commit (\`ferry vm show ${e.vm}\`)`,
      );
    if (e.type === 'cancel-refused')
      this.notice(`${e.vm}: cannot cancel now: ${e.message} [${e.code}]; waiting for the migration to end (Ctrl-C again to stop waiting)`);
    if (this.output.json) {
      this.output.emit(e as Record<string, unknown>);
      return;
    }
    const ev = e;
    const row = this.rows.get(ev.vm);
    const percent = row?.percent ?? 0;
    switch (ev.type) {
      case 'decided':
        this.set(ev.vm, 0, `${ev.from} -> ${ev.to}, ${ev.mode}, ${ev.streams} streams, ${formatBytes(ev.memoryBytes)}: preparing`);
        break;
      case 'queued':
        this.set(ev.vm, 0, ev.side === 'coordinator' ? `queued (place ${ev.position})` : `queued at the ${ev.side} (place ${ev.position})`);
        break;
      case 'started':
        this.set(ev.vm, 0, 'running: pass 1');
        break;
      case 'pass': {
        const done = ev.bytesSent + ev.bytesLeft > 0 ? (100 * ev.bytesSent) / (ev.bytesSent + ev.bytesLeft) : 0;
        const eta = ev.throughput > 0 ? formatDuration((1000 * ev.bytesLeft) / ev.throughput) : '?';
        const throttle = ev.throttlePercent > 0 ? `, throttled ${ev.throttlePercent}%` : '';
        this.set(
          ev.vm,
          Math.min(99, done),
          `running: pass ${ev.pass}, ${formatBytes(ev.bytesSent)} sent, ${formatBytes(ev.bytesLeft)} left, ${formatRate(ev.throughput)}, dirty ${formatRate(ev.dirtyRate)}${throttle}, ETA ${eta}`,
          false,
        );
        break;
      }
      case 'disks':
        // Disks are mirrored (in sync) before memory moves: their bar is the migration's first part.
        this.set(
          ev.vm,
          0,
          `mirroring disks: ${formatBytes(ev.bytesDone)} of ${formatBytes(ev.bytesTotal)}, ${ev.ready} of ${ev.disks} in sync`,
          false,
        );
        break;
      case 'throttle':
        this.note(`${ev.vm}: throttling the guest to ${100 - ev.percent}% of its speed (it dirties memory faster than the link drains)`);
        break;
      case 'switch-over':
        this.set(
          ev.vm,
          Math.max(percent, 99),
          `switch-over: ${formatBytes(ev.bytesLeft)} left, about ${formatDuration(ev.estimatedDowntimeMs)} paused`,
        );
        break;
      case 'committed':
        this.set(ev.vm, 100, `committed${ev.downtimeMs !== null ? `, downtime ${formatDuration(ev.downtimeMs)}` : ''}`);
        break;
      case 'in-doubt':
        this.set(ev.vm, percent, `in doubt (${ev.message}): the guest stays paused on the source until the destination answers`);
        break;
      case 'resolving':
        this.set(ev.vm, percent, `asking the destination what it decided (attempt ${ev.attempt})`);
        break;
      case 'resolved':
        this.set(ev.vm, ev.decision === 'committed' ? 100 : percent, `destination says ${ev.decision}`);
        break;
      case 'aborted':
        // Why, and where the guest runs, is the command's error line at the end: said once.
        this.set(ev.vm, percent, `aborted [${ev.code}]`);
        break;
      default:
        break; // destination progress and ready-to-commit: the source's events say the same; cancels: notice()
    }
  }

  /** The end of one guest's migration, as the coordinator saw it (shown even without an engine event). */
  finish(vm: string, ok: boolean, text: string): void {
    if (this.output.json) return;
    this.set(vm, ok ? 100 : (this.rows.get(vm)?.percent ?? 0), text);
  }

  stop(): void {
    // A redraw first: it writes the lines logged since the last one (a notice just before the end).
    if (this.multibar?.isActive) this.multibar.update();
    this.multibar?.stop();
  }
}
