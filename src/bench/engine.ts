/**
 * `ferry bench engine`: the migration engine alone, between two guest processes on this host
 * (this process playing both agents), encrypted and plain alternating in one run, reported as
 * figures and the encrypted/plain ratio. `ferry bench migrate` measures through real agents.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Argv } from 'yargs';
import { FerryError } from '../errors.js';
import { parseWorkload, startGuest, type GuestConfig } from '../guest/index.js';
import { migrateLocally } from './local-migration.js';
import { wanRoute } from './wan-emulator.js';
import type { MigrationResult } from '../migration/types.js';
import { formatBytes, formatDuration, formatRate, parseDuration, parseRate, parseSize } from '../common/units.js';
import { defineCommand, type GlobalArgs } from '../cli/command.js';

interface EngineArgs {
  memory: string;
  disk: string;
  workload: string;
  streams: number;
  runs: number;
  bandwidth?: string;
  rtt?: string;
  'max-downtime': string;
}

interface Run {
  mode: 'encrypted' | 'plain';
  outcome: string;
  totalMs: number;
  downtimeMs: number | null;
  bytesSent: number;
  wireFraction: number;
  throughput: number;
  passes: number;
  zeroPagesSkipped: number;
  throttlePercent: number;
  sourceCpuMs: number;
  /** The round trip the engine measured (BEGIN to BEGIN_OK). */
  roundTripMs: number | null;
}

function summarize(mode: Run['mode'], r: MigrationResult, memoryBytes: number): Run {
  return {
    mode,
    outcome: r.outcome,
    totalMs: r.totalMs,
    downtimeMs: r.downtimeMs,
    bytesSent: r.bytesSent,
    wireFraction: r.bytesSent / memoryBytes,
    throughput: r.throughput,
    passes: r.passes.length,
    zeroPagesSkipped: r.zeroPagesSkipped,
    throttlePercent: r.throttlePercent,
    sourceCpuMs: r.cpu.userMs + r.cpu.systemMs,
    roundTripMs: r.roundTripMs,
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export const benchEngineCommand = defineCommand<EngineArgs>({
  command: 'engine',
  describe: 'the migration engine between two local guest processes: time, downtime, bytes, encrypted/plain',
  builder: (yargs: Argv<GlobalArgs>) =>
    yargs
      .option('memory', { type: 'string', default: '1GiB', describe: 'guest memory' })
      .option('disk', { type: 'string', default: '0', describe: 'guest disk (0: none)' })
      .option('workload', {
        type: 'string',
        default: 'idle',
        describe: 'idle | kv:get=N,set=N | dirty:RATE[,fill] (idle writes memory first; fill, memory and disk)',
      })
      .option('streams', { type: 'number', default: 2, describe: 'TCP connections' })
      .option('runs', { type: 'number', default: 1, describe: 'encrypted/plain pairs' })
      .option('bandwidth', { type: 'string', describe: 'link cap, e.g. 10Gbit' })
      .option('rtt', {
        type: 'string',
        describe:
          'a long link: the data goes through the user-space WAN emulator with this round trip (e.g. 150ms), capped at --bandwidth there',
      })
      .option('max-downtime', { type: 'string', default: '500ms' })
      .example('$0 bench engine --memory 2GiB', 'a 2 GiB idle guest of random data, encrypted then plain')
      .example('$0 bench engine --memory 8GiB --workload dirty:4KB --runs 1', 'a fresh guest: bytes on the wire against its size')
      .example(
        '$0 bench engine --memory 1GiB --workload kv:get=20000,set=5000 --rtt 150ms --bandwidth 1Gbit',
        'a long-distance move: 150 ms round trips on a 1 Gb/s link',
      ),
  run: async (output, args) => {
    const memoryBytes = parseSize(args.memory, '--memory');
    const diskBytes = parseSize(args.disk, '--disk');
    const workload = parseWorkload(args.workload);
    const maxBytesPerSecond = args.bandwidth ? parseRate(args.bandwidth, '--bandwidth') : undefined;
    const maxDowntimeMs = parseDuration(args['max-downtime'], '--max-downtime');
    const rttMs = args.rtt === undefined ? null : parseDuration(args.rtt, '--rtt');
    if (rttMs !== null && !(rttMs > 0 && rttMs <= 10_000))
      throw new FerryError('ERR_FERRY_USAGE', '--rtt must be more than 0 and at most 10s');
    if (!Number.isInteger(args.runs) || args.runs < 1 || args.runs > 20) throw new FerryError('ERR_FERRY_USAGE', '--runs must be 1 to 20');
    if (!Number.isInteger(args.streams) || args.streams < 1 || args.streams > 16)
      throw new FerryError('ERR_FERRY_USAGE', '--streams must be 1 to 16');
    const config: GuestConfig = {
      name: 'bench',
      driver: 'synthetic',
      memoryBytes,
      diskBytes,
      workload,
      nic: 'virtio',
      encryptedMigration: 'opportunistic',
    };
    const root = mkdtempSync(join(tmpdir(), 'ferry-bench-engine-'));
    const runs: Run[] = [];
    let n = 0;
    try {
      for (let i = 0; i < args.runs; i++) {
        for (const mode of ['encrypted', 'plain'] as const) {
          const src = await startGuest(join(root, `s${n}`), config);
          try {
            while (!(await src.status()).workloadReady) await new Promise((r) => setTimeout(r, 100));
            output.info(`run ${i + 1}/${args.runs}, ${mode}: ${formatBytes(memoryBytes)} ${args.workload} guest...`);
            // With --rtt the link is the WAN emulator's: the cap is there, not in the sender.
            const wan =
              rttMs === null ? null : wanRoute({ delayMs: rttMs / 2, ...(maxBytesPerSecond ? { bytesPerSecond: maxBytesPerSecond } : {}) });
            const m = await migrateLocally(src, join(root, `d${n++}`), config, {
              mode,
              streams: args.streams,
              maxDowntimeMs,
              ...(wan ? { route: wan.route } : { maxBytesPerSecond }),
            }).finally(() => wan?.close());
            const run = summarize(mode, m.source.result!, memoryBytes);
            runs.push(run);
            output.emit({ type: 'run', ...run });
            output.print(
              `${mode.padEnd(9)} ${run.outcome}: total ${formatDuration(run.totalMs)}, downtime ${run.downtimeMs === null ? '—' : formatDuration(run.downtimeMs)}, ` +
                `${formatRate(run.throughput)}, ${formatBytes(run.bytesSent)} sent (${(run.wireFraction * 100).toFixed(2)}% of memory), ${run.passes} passes, source CPU ${run.sourceCpuMs} ms` +
                `${rttMs === null || run.roundTripMs === null ? '' : `, round trip ${Math.round(run.roundTripMs)} ms`}`,
            );
            if (m.source.phase === 'committed') await m.incoming.client.stop().catch(() => {});
            else await m.incoming.client.destroy().catch(() => {});
          } finally {
            if ((await src.migration().catch(() => null))?.phase === 'committed') await src.finish().catch(() => {});
            else await src.stop().catch(() => {});
          }
        }
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
    const total = (mode: Run['mode']): number => median(runs.filter((r) => r.mode === mode).map((r) => r.totalMs));
    const ratio = total('encrypted') / total('plain');
    output.emit({
      type: 'result',
      ok: true,
      subject: 'engine',
      memoryBytes,
      diskBytes,
      workload: args.workload,
      streams: args.streams,
      rttMs,
      runs,
      encryptedOverPlainTime: ratio,
    });
    output.print(`encrypted/plain total time (medians): ${ratio.toFixed(2)}x`);
  },
});
