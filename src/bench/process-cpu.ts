/**
 * CPU time of other processes, from /proc: utime + stime of /proc/PID/stat (every thread, those
 * that already exited included), and of the threads whose name matches, from /proc/PID/task.
 * QEMU names its vCPU threads `CPU n/TCG` or `CPU n/KVM` (`-name ...,debug-threads=on`), which
 * tells the guest's own running apart from the work of migrating it.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let ticks: number | null = null;

/** Clock ticks a second (USER_HZ), the unit of /proc's times. */
function clockTicks(): number {
  if (ticks === null) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number(r.stdout?.trim());
    ticks = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return ticks;
}

/** utime + stime in seconds from one stat line; null when it is not one. */
function statSeconds(line: string): { name: string; seconds: number } | null {
  // The name sits in parentheses and may hold spaces and parentheses itself: the last ')' ends it.
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const fields = line.slice(close + 2).split(' ');
  // After the name, field 3 (state) is fields[0]; utime is field 14, stime field 15.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
  return { name: line.slice(open + 1, close), seconds: (utime + stime) / clockTicks() };
}

export interface ProcessCpu {
  /** Every thread of the process. */
  seconds: number;
  /** Of which the threads whose name matched. */
  matchedSeconds: number;
}

/** The process's CPU seconds so far; null once it is gone. */
export function processCpu(pid: number, threads?: RegExp): ProcessCpu | null {
  let total: ReturnType<typeof statSeconds>;
  try {
    total = statSeconds(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null;
  }
  if (!total) return null;
  let matchedSeconds = 0;
  if (threads) {
    let tids: string[] = [];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      // gone meanwhile: no threads to count
    }
    for (const tid of tids) {
      try {
        const t = statSeconds(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'));
        if (t && threads.test(t.name)) matchedSeconds += t.seconds;
      } catch {
        // this thread ended meanwhile
      }
    }
  }
  return { seconds: total.seconds, matchedSeconds };
}

/** QEMU's vCPU threads (debug-threads=on). */
export const VCPU_THREADS = /^CPU \d+\//;

/**
 * CPU seconds spent by a side's processes between two readings. A process missing from the first
 * reading started after it: all of its time counts.
 */
export class CpuMeter {
  private readonly start = new Map<number, ProcessCpu>();

  constructor(private readonly threads: RegExp = VCPU_THREADS) {}

  /** Reads each pid now; those read later with since() are measured from here. */
  mark(pids: number[]): this {
    for (const pid of pids) {
      const c = processCpu(pid, this.threads);
      if (c) this.start.set(pid, c);
    }
    return this;
  }

  /** Seconds spent by `pids` since mark() (all of their life for those not marked); null when one is gone. */
  since(pids: number[]): ProcessCpu | null {
    let seconds = 0;
    let matchedSeconds = 0;
    for (const pid of pids) {
      const now = processCpu(pid, this.threads);
      if (!now) return null;
      const before = this.start.get(pid) ?? { seconds: 0, matchedSeconds: 0 };
      seconds += now.seconds - before.seconds;
      matchedSeconds += now.matchedSeconds - before.matchedSeconds;
    }
    return { seconds: round(seconds), matchedSeconds: round(matchedSeconds) };
  }
}

const round = (x: number) => Math.round(x * 1000) / 1000;
