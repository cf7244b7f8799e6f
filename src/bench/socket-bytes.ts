/**
 * The bytes that crossed the TCP connections to one local port, both directions, counted by the
 * kernel: each socket's tcp_info `bytes_sent` (payload, retransmissions included; TCP/IP headers
 * not), read with iproute2's `ss`. A socket's counters go with it when it closes, so `ss -E`
 * (the kernel's socket-destroyed notifications, which carry the final tcp_info) runs for the whole
 * count, and at the end one `ss` reading adds the sockets still open. Both ends of a connection
 * are counted, so each direction's payload is counted once, by its sender. Needs root (the
 * notifications are for CAP_NET_ADMIN).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { sleep } from '../common/async.js';

interface SocketRecord {
  /** `local peer`, unique per connection end while the count runs. */
  key: string;
  bytesSent: number;
}

/** Reads `ss -i` output: a line per socket with its addresses, then an indented line of tcp_info. */
export function parseSs(text: string, port: number): SocketRecord[] {
  const out: SocketRecord[] = [];
  let current: string | null = null;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (!/^\s/.test(line)) {
      const cols = line.trim().split(/\s+/);
      // State Recv-Q Send-Q Local Peer: a listener's peer is `*`, and it carries no data.
      const [local, peer] = [cols[3], cols[4]];
      current =
        local && peer && !peer.endsWith(':*') && (local.endsWith(`:${port}`) || peer.endsWith(`:${port}`)) ? `${local} ${peer}` : null;
      continue;
    }
    if (current === null) continue;
    const sent = /\bbytes_sent:(\d+)/.exec(line);
    // ss leaves out counters that are zero.
    out.push({ key: current, bytesSent: sent ? Number(sent[1]) : 0 });
    current = null;
  }
  return out;
}

const filter = (port: number) => `( sport = :${port} or dport = :${port} )`;

export class SocketBytes {
  private text = '';
  private readonly exited: Promise<void>;
  private failure: string | null = null;

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (this.text += s));
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.once('error', (err) => (this.failure = `cannot run ss: ${err.message}`));
    this.exited = new Promise((resolve) =>
      child.once('close', (code, signal) => {
        if (signal === null && code !== 0) this.failure ??= `ss -E exited ${code}: ${stderr.trim().slice(0, 200)}`;
        resolve();
      }),
    );
  }

  /** Null when ss cannot count here (not installed, no stdbuf, not root); otherwise why not. */
  static unavailable(): string | null {
    if (process.getuid?.() !== 0) return 'counting socket bytes needs root (ss -E)';
    for (const tool of [
      ['ss', '-V'],
      ['stdbuf', '--version'],
    ]) {
      const r = spawnSync(tool[0]!, [tool[1]!], { encoding: 'utf8' });
      if (r.error || r.status !== 0) return `${tool[0]} is not installed`;
    }
    return null;
  }

  /** Starts counting the connections to or from `port`. */
  static async start(port: number): Promise<SocketBytes> {
    // Line-buffered: ss does not flush a pipe before it is killed.
    const child = spawn('stdbuf', ['-oL', 'ss', '-HtinE', filter(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const counter = new SocketBytes(child, port);
    // Let it subscribe before the first connection can close (it prints nothing until one does).
    await sleep(100);
    if (counter.failure) throw new Error(counter.failure);
    return counter;
  }

  /** Bytes sent over every connection to or from the port, both ends; null (with why) when ss failed. */
  async stop(): Promise<{ bytes: number | null; connections: number; error: string | null }> {
    const open = spawnSync('ss', ['-Htin', filter(this.port)], { encoding: 'utf8' });
    // Give the notifications of sockets that closed just now time to arrive.
    await sleep(200);
    this.child.kill('SIGTERM');
    await this.exited;
    if (this.failure) return { bytes: null, connections: 0, error: this.failure };
    const ends = new Map<string, number>();
    for (const r of parseSs(open.stdout ?? '', this.port)) ends.set(r.key, r.bytesSent);
    // A socket that closed after the reading of the open ones: its final figures win.
    for (const r of parseSs(this.text, this.port)) ends.set(r.key, r.bytesSent);
    let bytes = 0;
    for (const b of ends.values()) bytes += b;
    return { bytes, connections: ends.size / 2, error: null };
  }
}
