/**
 * One end of a `ferry bench channel` run, in its own process so its CPU time is its own
 * (process.cpuUsage). The parent sends one job over IPC and gets one result back.
 */
import { randomFillSync } from 'node:crypto';
import { connectChannel, listenChannel, type ChannelSpec } from '../channel/index.js';
import { loadBackend, onCryptoFallback } from '../crypto/index.js';

export interface PeerJob {
  role: 'sender' | 'receiver';
  spec: Omit<ChannelSpec, 'key' | 'nonce'> & { key: string; nonce: string };
  bytes: number;
  frameBytes: number;
  windowBytes: number;
}

export interface PeerResult {
  role: 'sender' | 'receiver';
  bytes: number;
  seconds: number;
  cpuSeconds: number;
  backend: string;
  error?: { code: string; message: string };
}

const SOURCE_BYTES = 64 * 1024 * 1024;
/** Sends kept outstanding, so an async backend gets whole batches to spread over the cores. */
const OUTSTANDING = 32;

function cpuSeconds(since: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1e6;
}

async function runSender(job: PeerJob, spec: ChannelSpec): Promise<PeerResult> {
  const backend = await loadBackend();
  // Random bytes, read in turn like guest memory; never the same cache-hot buffer.
  const source = randomFillSync(Buffer.allocUnsafe(SOURCE_BYTES));
  const cpu = process.cpuUsage();
  const channel = await connectChannel(spec, { backend, windowBytes: job.windowBytes });
  const start = performance.now();
  const pending: Promise<void>[] = [];
  let off = 0;
  for (let sent = 0; sent < job.bytes; sent += job.frameBytes) {
    if (off + job.frameBytes > SOURCE_BYTES) off = 0;
    pending.push(channel.send(0, source.subarray(off, off + job.frameBytes)));
    off += job.frameBytes;
    if (pending.length >= OUTSTANDING) await pending.shift();
  }
  await Promise.all(pending);
  await channel.end();
  const seconds = (performance.now() - start) / 1000;
  return { role: 'sender', bytes: channel.stats.bytesSent, seconds, cpuSeconds: cpuSeconds(cpu), backend: backend.name };
}

async function runReceiver(job: PeerJob, spec: ChannelSpec): Promise<PeerResult> {
  const backend = await loadBackend();
  // The consumer hands each payload's memory back once it has used it, as a guest would.
  const free: Buffer[] = [];
  const allocatePayload = (_type: number, length: number): Buffer => {
    const b = free.pop();
    return b && b.length === length ? b : Buffer.allocUnsafeSlow(length);
  };
  const listener = await listenChannel(spec, { backend, windowBytes: job.windowBytes, allocatePayload });
  const cpu = process.cpuUsage();
  process.send!({ ready: true, networks: listener.networks });
  const channel = listener.channel;
  let bytes = 0;
  let start = 0;
  for (let m = await channel.receive(); m; m = await channel.receive()) {
    if (start === 0) start = performance.now();
    bytes += m.payload.length;
    if (free.length < 512) free.push(m.payload as Buffer);
  }
  await channel.end();
  await listener.close();
  return { role: 'receiver', bytes, seconds: (performance.now() - start) / 1000, cpuSeconds: cpuSeconds(cpu), backend: backend.name };
}

// The peer's stderr is the bench's terminal: the operator reads there that the addon is missing.
onCryptoFallback((notice) => process.stderr.write(`ferry: ${notice}\n`));
process.once('message', (job: PeerJob) => {
  const spec: ChannelSpec = { ...job.spec, key: Buffer.from(job.spec.key, 'base64'), nonce: Buffer.from(job.spec.nonce, 'base64') };
  const run = job.role === 'sender' ? runSender(job, spec) : runReceiver(job, spec);
  run
    .catch((err: { code?: string; message?: string }): PeerResult => ({
      role: job.role,
      bytes: 0,
      seconds: 0,
      cpuSeconds: 0,
      backend: '',
      error: { code: err.code ?? 'ERR_FERRY_INTERNAL', message: err.message ?? String(err) },
    }))
    .then((result) => {
      (spec.key as Buffer).fill(0);
      process.send!(result, () => process.disconnect());
    });
});
