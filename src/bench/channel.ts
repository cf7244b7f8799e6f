/**
 * `ferry bench channel`: throughput and CPU seconds per GB on each side of the encrypted channel,
 * encrypted against plain, 1/2/4 streams, unlimited and capped at 10 Gb/s on loopback, and at
 * 0.5/5/50/150 ms RTT through the WAN emulator at 1 Gb/s; iperf3 on loopback for comparison.
 *
 * Sender and receiver are separate processes (channel-peer.js), so each side's CPU time is its
 * own; the WAN emulator runs in this process. Units: gbPerSec and capGbps are gigabits a second
 * (10^9 bits), CPU is seconds per GB of payload (10^9 bytes).
 */
import { execFile, fork, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { freePort } from '../cli/free-port.js';
import { fileURLToPath } from 'node:url';
import { defineCommand } from '../cli/command.js';
import type { Output } from '../cli/output.js';
import { FerryError } from '../errors.js';
import { parseSize } from '../common/units.js';
import { startWanEmulator } from './wan-emulator.js';
import type { ChannelMode } from '../channel/types.js';
import type { PeerJob, PeerResult } from './channel-peer.js';

export interface ChannelBenchRow {
  mode: ChannelMode;
  streams: number;
  /** 0: straight over loopback, no emulator. */
  rttMs: number;
  /** null: no cap. */
  capGbps: number | null;
  gbPerSec: number;
  senderCpuSecPerGB: number;
  receiverCpuSecPerGB: number;
  bytes: number;
  seconds: number;
  /** The crypto backend both peers used. */
  backend?: string;
  error?: { code: string; message: string };
}

interface Case {
  mode: ChannelMode;
  streams: number;
  rttMs: number;
  capGbps: number | null;
  /** Where the cap is applied: the channel's own pacer, or the emulated link. */
  capBy: 'channel' | 'link' | null;
  bytes: number;
}

interface Args {
  size: string;
  'wan-size': string;
  frame: string;
  quick: boolean;
  only?: string;
}

const WINDOW_BYTES = 64 * 1024 * 1024;
const ROW_TIMEOUT_MS = 90_000;

function cases(loopBytes: number, wanBytes: number, quick: boolean): Case[] {
  const out: Case[] = [];
  if (quick) {
    for (const mode of ['encrypted', 'plain'] as const)
      out.push({ mode, streams: 1, rttMs: 0, capGbps: null, capBy: null, bytes: loopBytes });
    out.push({ mode: 'encrypted', streams: 2, rttMs: 5, capGbps: 1, capBy: 'link', bytes: wanBytes });
    return out;
  }
  for (const capGbps of [null, 10]) {
    for (const streams of [1, 2, 4]) {
      for (const mode of ['encrypted', 'plain'] as const) {
        out.push({ mode, streams, rttMs: 0, capGbps, capBy: capGbps ? 'channel' : null, bytes: loopBytes });
      }
    }
  }
  for (const rttMs of [0.5, 5, 50, 150]) {
    for (const mode of ['encrypted', 'plain'] as const) out.push({ mode, streams: 2, rttMs, capGbps: 1, capBy: 'link', bytes: wanBytes });
  }
  return out;
}

/** A run's label, e.g. `encrypted/s2/rtt0/cap10`, matched by --only. */
function caseLabel(c: Case): string {
  return `${c.mode}/s${c.streams}/rtt${c.rttMs}/cap${c.capGbps ?? '-'}`;
}

function peerPath(): string {
  return fileURLToPath(new URL('./channel-peer.js', import.meta.url));
}

function startPeer(children: Set<ChildProcess>): ChildProcess {
  // Under tsx (tests) the peer is the .ts source; from dist it is the compiled .js.
  const path = peerPath();
  const ts = import.meta.url.endsWith('.ts');
  // FERRY_BENCH_PEER_NODE_ARGS: extra node flags for the peers, e.g. '--cpu-prof' to profile a side.
  const extra = (process.env.FERRY_BENCH_PEER_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = fork(ts ? path.replace(/\.js$/, '.ts') : path, [], {
    execArgv: [...(ts ? ['--import', 'tsx'] : []), ...extra],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function nextMessage<T>(child: ChildProcess): Promise<T> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null): void => reject(new FerryError('ERR_FERRY_INTERNAL', `bench peer exited with ${code}`));
    child.once('exit', onExit);
    child.once('message', (m) => {
      child.off('exit', onExit);
      resolve(m as T);
    });
  });
}

async function runCase(c: Case, frameBytes: number): Promise<ChannelBenchRow> {
  const children = new Set<ChildProcess>();
  const key = randomBytes(32);
  const spec: PeerJob['spec'] = {
    // eslint-disable-next-line no-restricted-properties -- a unique name, not a duration
    migrationId: `bench-${process.pid}-${Date.now()}`,
    key: key.toString('base64'),
    nonce: randomBytes(8).toString('base64'),
    mode: c.mode,
    streams: c.streams,
    networks: ['127.0.0.1:0'],
    maxBytesPerSecond: c.capBy === 'channel' ? (c.capGbps! * 1e9) / 8 : undefined,
  };
  key.fill(0);
  let wan: Awaited<ReturnType<typeof startWanEmulator>> | undefined;
  const timer = setTimeout(() => {
    for (const ch of children) ch.kill('SIGKILL');
  }, ROW_TIMEOUT_MS);
  try {
    const receiver = startPeer(children);
    const job = { spec, bytes: c.bytes, frameBytes, windowBytes: WINDOW_BYTES };
    receiver.send({ ...job, role: 'receiver' } satisfies PeerJob);
    const ready = await nextMessage<{ networks: string[] }>(receiver);
    const receiverDone = nextMessage<PeerResult>(receiver);
    let target = ready.networks[0]!;
    if (c.rttMs > 0) {
      wan = await startWanEmulator({
        target,
        delayMs: c.rttMs / 2,
        bytesPerSecond: c.capBy === 'link' ? (c.capGbps! * 1e9) / 8 : undefined,
      });
      target = wan.address;
    }
    const sender = startPeer(children);
    sender.send({ ...job, role: 'sender', spec: { ...spec, networks: [target] } } satisfies PeerJob);
    const [s, r] = await Promise.all([nextMessage<PeerResult>(sender), receiverDone]);
    const error = s.error ?? r.error;
    const gb = s.bytes / 1e9;
    return {
      mode: c.mode,
      streams: c.streams,
      rttMs: c.rttMs,
      capGbps: c.capGbps,
      gbPerSec: error ? 0 : (s.bytes * 8) / 1e9 / s.seconds,
      senderCpuSecPerGB: error ? 0 : s.cpuSeconds / gb,
      receiverCpuSecPerGB: error ? 0 : r.cpuSeconds / gb,
      bytes: s.bytes,
      seconds: s.seconds,
      backend: s.backend,
      ...(error ? { error } : {}),
    };
  } finally {
    clearTimeout(timer);
    await wan?.close();
    // Peers exit by themselves once they have reported (and flush a --cpu-prof); stragglers are killed.
    await Promise.all(
      [...children].map(
        (ch) =>
          new Promise<void>((resolve) => {
            const t = setTimeout(() => ch.kill('SIGKILL'), 3000);
            ch.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            if (ch.exitCode !== null || ch.signalCode !== null) {
              clearTimeout(t);
              resolve();
            }
          }),
      ),
    );
  }
}

/** iperf3's loopback throughput in Gbit/s with `streams` streams; null when iperf3 is missing. */
export async function iperf3(streams: number, seconds: number): Promise<number | null> {
  if (spawnSync('iperf3', ['--version']).error) return null;
  const port = await freePort();
  const server = execFile('iperf3', ['-s', '-1', '-B', '127.0.0.1', '-p', String(port)]);
  try {
    await new Promise((r) => setTimeout(r, 300));
    const out = await new Promise<string>((resolve, reject) =>
      execFile('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-t', String(seconds), '-P', String(streams), '-J'], (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      ),
    );
    const bps = (JSON.parse(out) as { end?: { sum_received?: { bits_per_second?: number } } }).end?.sum_received?.bits_per_second;
    return typeof bps === 'number' ? bps / 1e9 : null;
  } catch {
    return null;
  } finally {
    server.kill();
  }
}

function find(
  rows: ChannelBenchRow[],
  mode: ChannelMode,
  streams: number,
  rttMs: number,
  capGbps: number | null,
): ChannelBenchRow | undefined {
  return rows.find((r) => r.mode === mode && r.streams === streams && r.rttMs === rttMs && r.capGbps === capGbps && !r.error);
}

/** The ratios the goals in docs/performance.md are stated in, from this one run; null where a row is missing. */
export function channelRatios(rows: ChannelBenchRow[], iperf: Record<number, number | null>): Record<string, number | null> {
  const ratio = (a?: number, b?: number | null): number | null => (a !== undefined && b ? Number((a / b).toFixed(3)) : null);
  const out: Record<string, number | null> = {};
  for (const streams of [1, 2, 4]) {
    out[`encryptedCapped10VsCap_s${streams}`] = ratio(find(rows, 'encrypted', streams, 0, 10)?.gbPerSec, 10);
    out[`plainCapped10VsCap_s${streams}`] = ratio(find(rows, 'plain', streams, 0, 10)?.gbPerSec, 10);
    out[`encryptedVsIperf3_s${streams}`] = ratio(find(rows, 'encrypted', streams, 0, null)?.gbPerSec, iperf[streams]);
    out[`encryptedVsPlain_s${streams}`] = ratio(
      find(rows, 'encrypted', streams, 0, null)?.gbPerSec,
      find(rows, 'plain', streams, 0, null)?.gbPerSec,
    );
    const enc = find(rows, 'encrypted', streams, 0, null);
    const plain = find(rows, 'plain', streams, 0, null);
    // CPU s/GB × 1.25 GB/s = cores busy at 10 Gb/s.
    out[`encryptionCoresPer10Gbps_sender_s${streams}`] =
      enc && plain ? Number(((enc.senderCpuSecPerGB - plain.senderCpuSecPerGB) * 1.25).toFixed(3)) : null;
    out[`encryptionCoresPer10Gbps_receiver_s${streams}`] =
      enc && plain ? Number(((enc.receiverCpuSecPerGB - plain.receiverCpuSecPerGB) * 1.25).toFixed(3)) : null;
  }
  for (const mode of ['encrypted', 'plain'] as const) {
    out[`${mode}Rtt150VsRtt0_5`] = ratio(find(rows, mode, 2, 150, 1)?.gbPerSec, find(rows, mode, 2, 0.5, 1)?.gbPerSec);
  }
  for (const k of Object.keys(out)) if (out[k] === null) delete out[k];
  return out;
}

function fmt(n: number, digits = 2): string {
  return n.toFixed(digits);
}

async function run(output: Output, args: Args): Promise<void> {
  const loopBytes = parseSize(args.size, '--size');
  const wanBytes = parseSize(args['wan-size'], '--wan-size');
  const frameBytes = parseSize(args.frame, '--frame');
  if (frameBytes < 4096 || frameBytes > 4 * 1024 * 1024) throw new FerryError('ERR_FERRY_USAGE', '--frame must be 4KiB to 4MiB');
  if (loopBytes < frameBytes || wanBytes < frameBytes)
    throw new FerryError('ERR_FERRY_USAGE', '--size and --wan-size must hold at least one frame');
  const rows: ChannelBenchRow[] = [];
  const list = cases(loopBytes, wanBytes, args.quick).filter((c) => !args.only || caseLabel(c).includes(args.only));
  if (list.length === 0)
    throw new FerryError('ERR_FERRY_USAGE', `--only ${args.only}: no run matches (labels look like ${caseLabel(cases(1, 1, false)[0]!)})`);
  output.info(
    `ferry bench channel: ${list.length} runs, ${args.size} on loopback, ${args['wan-size']} through the WAN emulator, ${args.frame} frames`,
  );
  output.info('the machine is shared: compare rows as ratios within this run');
  let backend = '';
  for (const c of list) {
    const row = await runCase(c, frameBytes);
    rows.push(row);
    const where = c.rttMs > 0 ? `${c.rttMs} ms RTT` : 'loopback';
    const cap = c.capGbps ? `cap ${c.capGbps} Gb/s` : 'no cap';
    if (row.error) output.warn(`${c.mode} ×${c.streams} ${where} ${cap}: ${row.error.code}: ${row.error.message}`);
    else
      output.info(
        `  ${c.mode.padEnd(9)} ×${c.streams}  ${where.padEnd(12)} ${cap.padEnd(12)} ${fmt(row.gbPerSec).padStart(6)} Gb/s  CPU s/GB sender ${fmt(row.senderCpuSecPerGB, 3)} receiver ${fmt(row.receiverCpuSecPerGB, 3)}`,
      );
    backend ||= row.backend ?? '';
  }
  const iperf: Record<number, number | null> = {};
  for (const streams of args.quick ? [1] : args.only ? [] : [1, 2, 4]) iperf[streams] = await iperf3(streams, args.quick ? 1 : 3);
  const peers = { iperf3GbPerSec: iperf[1] ?? null, iperf3GbPerSecByStreams: iperf };
  const ratios = channelRatios(rows, iperf);
  if (output.json) {
    output.emit({
      rows,
      peers,
      ratios,
      backend,
      units: { gbPerSec: 'Gbit/s', capGbps: 'Gbit/s', cpu: 'CPU seconds per 10^9 payload bytes' },
    });
    return;
  }
  output.print('mode       streams  rtt ms  cap Gb/s   Gb/s  sender CPU s/GB  receiver CPU s/GB');
  for (const r of rows) {
    output.print(
      `${r.mode.padEnd(10)} ${String(r.streams).padStart(7)} ${String(r.rttMs).padStart(7)} ${String(r.capGbps ?? '-').padStart(9)} ${r.error ? r.error.code.padStart(6) : fmt(r.gbPerSec).padStart(6)} ${fmt(r.senderCpuSecPerGB, 3).padStart(16)} ${fmt(r.receiverCpuSecPerGB, 3).padStart(18)}`,
    );
  }
  output.print(`crypto backend: ${backend}`);
  output.print(
    `iperf3 loopback: ${Object.entries(iperf)
      .map(([s, v]) => `${s} stream(s) ${v === null ? 'n/a' : `${fmt(v)} Gb/s`}`)
      .join(', ')}`,
  );
  output.print('ratios:');
  for (const [k, v] of Object.entries(ratios)) output.print(`  ${k}: ${v}`);
}

export const benchChannelCommand = defineCommand<Args>({
  command: 'channel',
  describe: 'channel throughput and CPU s/GB per side: encrypted vs plain, 1/2/4 streams, 10 Gb/s cap, 0.5-150 ms RTT',
  builder: (yargs) =>
    yargs
      .option('size', {
        type: 'string',
        default: '2GiB',
        describe: 'payload per loopback run (2 GiB: long enough that process start, JIT and the first touch of the window do not count)',
      })
      .option('wan-size', { type: 'string', default: '192MiB', describe: 'payload per run through the WAN emulator (1 Gb/s)' })
      .option('frame', { type: 'string', default: '256KiB', describe: 'message (frame payload) size' })
      .option('quick', { type: 'boolean', default: false, describe: 'three small runs only (a smoke test)' })
      .option('only', { type: 'string', describe: 'only the runs whose label contains this, e.g. plain/s1/rtt0/cap- (no iperf3)' })
      .example('$0 bench channel --json', 'all rows, one JSON object')
      .example('$0 bench channel --quick --size 32MiB --wan-size 16MiB', 'a smoke test') as never,
  run,
});
