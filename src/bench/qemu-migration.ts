/**
 * QEMU's own live migration between two local QEMU processes, timed by QEMU (`query-migrate`),
 * as the yardstick of `ferry bench migrate`. The guest is idle (`-S`: no vCPU runs, so TCG needs
 * no kernel) and its RAM is a private mapping of a file of random bytes, so every page is
 * non-zero and incompressible; the destination starts with `-incoming defer` on fresh RAM.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import path from 'node:path';
import { FerryError } from '../errors.js';
import { initPki } from '../coordinator/pki.js';
import { issueHostCertificate } from '../coordinator/pki.js';
import { writeFileAtomic } from '../common/atomic-file.js';
import { QmpClient } from './qmp.js';

export const QEMU_BINARY = 'qemu-system-x86_64';

export type QemuMode = 'plain' | 'tls' | 'multifd-tls';

export interface QemuMigrationResult {
  mode: QemuMode;
  status: string;
  totalMs: number;
  downtimeMs: number;
  transferredBytes: number;
  /** Megabits a second, as QEMU reports it. */
  mbps: number;
}

/** Null when QEMU can run here; otherwise why not. */
export function qemuMissing(): string | null {
  const r = spawnSync(QEMU_BINARY, ['--version'], { encoding: 'utf8' });
  if (r.error) return `${QEMU_BINARY} is not installed (${(r.error as NodeJS.ErrnoException).code})`;
  if (r.status !== 0) return `${QEMU_BINARY} --version exited ${r.status}`;
  return null;
}

/** A file of `bytes` random bytes (on disk, fsync'd): the source guest's RAM image. */
export function writeRandomFile(file: string, bytes: number): void {
  const chunk = Buffer.allocUnsafe(Math.min(bytes, 64 << 20));
  const fd = openSync(file, 'w', 0o600);
  try {
    for (let done = 0; done < bytes; done += chunk.length) {
      const n = Math.min(chunk.length, bytes - done);
      randomFillSync(chunk, 0, n);
      writeSync(fd, chunk, 0, n);
    }
    // Written back now, not by the kernel's flusher in the middle of the first timed migration.
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * QEMU's x509 credential directory (ca-cert.pem, server-*.pem, client-*.pem) from a throwaway CA
 * made by ferry's own PKI code (openssl, ECDSA P-256); one certificate named `localhost` serves
 * as both server and client.
 */
export async function makeQemuTlsDir(dir: string): Promise<string> {
  const pki = await initPki(path.join(dir, 'pki'));
  const creds = path.join(dir, 'qemu-tls');
  mkdirSync(creds, { mode: 0o700 });
  const key = path.join(creds, 'server-key.pem');
  const cert = await issueHostCertificate(pki, 'localhost', key);
  await writeFileAtomic(path.join(creds, 'server-cert.pem'), cert, 0o644);
  await writeFileAtomic(path.join(creds, 'client-cert.pem'), cert, 0o644);
  copyFileSync(key, path.join(creds, 'client-key.pem'));
  copyFileSync(pki.caCert, path.join(creds, 'ca-cert.pem'));
  return creds;
}

/** One QEMU process with its QMP socket; stop() kills it and waits for it to go. */
export class QemuProcess {
  private stderr = '';
  private readonly exited: Promise<void>;

  private constructor(
    readonly child: ChildProcess,
    readonly qmpPath: string,
  ) {
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => (this.stderr = (this.stderr + s).slice(-4000)));
    this.exited = new Promise((r) => child.once('exit', () => r()));
  }

  /** Starts QEMU with `args` plus a QMP socket in `dir`, and connects to it. */
  static async start(dir: string, name: string, args: string[]): Promise<{ qemu: QemuProcess; qmp: QmpClient }> {
    const qmpPath = path.join(dir, `${name}.qmp`);
    const child = spawn(QEMU_BINARY, [...args, '-qmp', `unix:${qmpPath},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'pipe'] });
    const qemu = new QemuProcess(child, qmpPath);
    try {
      // The socket appears once QEMU has set up (prealloc of the RAM comes first).
      const deadline = Date.now() + 60_000;
      for (;;) {
        if (child.exitCode !== null || child.signalCode !== null) throw new FerryError('ERR_FERRY_INTERNAL', `QEMU (${name}) exited: ${qemu.stderr.trim()}`);
        try {
          return { qemu, qmp: await QmpClient.connect(qmpPath) };
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    } catch (err) {
      await qemu.stop();
      throw err;
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}

export interface QemuMigrationOptions {
  dir: string;
  /** The source RAM image (a file of random bytes of the guest's memory size). */
  ramFile: string;
  memoryBytes: number;
  mode: QemuMode;
  /** The x509 credential directory, for the TLS modes. */
  tlsDir?: string;
  /** Registered so a caller's signal handler can kill them. */
  track?: (p: QemuProcess) => void;
}

/** Runs one QEMU migration from a fresh source to a fresh destination and reports QEMU's figures. */
export async function runQemuMigration(o: QemuMigrationOptions): Promise<QemuMigrationResult> {
  const tls = o.mode !== 'plain';
  if (tls && !o.tlsDir) throw new FerryError('ERR_FERRY_INPUT', `QEMU mode ${o.mode} needs a TLS credential directory`);
  const mib = Math.round(o.memoryBytes / 2 ** 20);
  const common = ['-accel', 'tcg', '-nographic', '-nodefaults', '-S', '-m', `${mib}M`, '-machine', 'pc,memory-backend=ram0'];
  const creds = (endpoint: string) => (tls ? ['-object', `tls-creds-x509,id=tls0,dir=${o.tlsDir},endpoint=${endpoint},verify-peer=on`] : []);
  const capabilities = o.mode === 'multifd-tls' ? [{ capability: 'multifd', state: true }] : [];
  const parameters = {
    // QEMU 7.2 defaults to 128 MiB/s: unlimited is what is compared.
    'max-bandwidth': 100 * 2 ** 30,
    ...(o.mode === 'multifd-tls' ? { 'multifd-channels': 2 } : {}),
    ...(tls ? { 'tls-creds': 'tls0' } : {}),
  };
  const started: { qemu: QemuProcess; qmp: QmpClient }[] = [];
  const start = async (name: string, args: string[]) => {
    const s = await QemuProcess.start(o.dir, `${name}-${o.mode}`, args);
    started.push(s);
    o.track?.(s.qemu);
    return s;
  };
  try {
    const dst = await start('dst', [...common, '-object', `memory-backend-ram,id=ram0,size=${mib}M`, ...creds('server'), '-incoming', 'defer']);
    const src = await start('src', [...common, '-object', `memory-backend-file,id=ram0,size=${mib}M,mem-path=${o.ramFile},share=off,prealloc=on`, ...creds('client')]);
    for (const s of [src, dst]) {
      if (capabilities.length) await s.qmp.execute('migrate-set-capabilities', { capabilities });
      await s.qmp.execute('migrate-set-parameters', parameters);
    }
    if (tls) await src.qmp.execute('migrate-set-parameters', { 'tls-hostname': 'localhost' });
    // Port 0: the destination's kernel picks a free port, which query-migrate then names.
    await dst.qmp.execute('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
    const listening = await dst.qmp.execute<{ 'socket-address'?: { host: string; port: string }[] }>('query-migrate');
    const port = listening['socket-address']?.[0]?.port;
    if (!port) throw new FerryError('ERR_FERRY_INTERNAL', 'the destination QEMU did not say where it listens for the migration');
    await src.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
    const deadline = Date.now() + 120_000;
    for (;;) {
      const info = await src.qmp.execute<Record<string, any>>('query-migrate');
      // QEMU 7.2 can answer "completed" a moment before it has filled in the times (seen once:
      // total-time 0, downtime 0, after 2 GiB crossed): ask again until they are there.
      if (info.status === 'completed' && !(info['total-time'] > 0) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      if (info.status === 'completed') {
        if (!(info['total-time'] > 0)) throw new FerryError('ERR_FERRY_INTERNAL', `QEMU migration (${o.mode}) completed without a total time`);
        return {
          mode: o.mode,
          status: info.status,
          totalMs: info['total-time'],
          downtimeMs: info.downtime,
          transferredBytes: info.ram?.transferred ?? 0,
          mbps: info.ram?.mbps ?? 0,
        };
      }
      if (info.status === 'failed' || info.status === 'cancelled') {
        throw new FerryError('ERR_FERRY_ABORTED', `QEMU migration (${o.mode}) ${info.status}: ${info['error-desc'] ?? 'no reason given'}`);
      }
      if (Date.now() > deadline) throw new FerryError('ERR_FERRY_TIMEOUT', `QEMU migration (${o.mode}) did not finish within 120 s (status ${info.status})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    for (const s of started) {
      s.qmp.close();
      await s.qemu.stop();
    }
  }
}
