/**
 * QEMU's own live migration between two local QEMU processes over TCP on 127.0.0.1, driven over
 * QMP by the product's client (src/guest/qemu/qmp.ts): the yardstick of `ferry bench migrate` and
 * `ferry bench qemu`. migrateByQemu() moves a guest between any two QEMUs (the destination
 * started with `-incoming defer`); runQemuMigration() is bench migrate's case, an idle guest (`-S`:
 * no vCPU runs, so TCG needs no kernel) whose RAM is a private mapping of a file of random bytes,
 * moved to a fresh destination.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, fsyncSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { FerryError } from '../errors.js';
import { sleep } from '../common/async.js';
import { diskNode } from '../guest/qemu/disks.js';
import { UNCAPPED_BANDWIDTH } from '../guest/qemu/migrate-out.js';
import { QmpClient, type MigrationInfo, type QmpEvent } from '../guest/qemu/qmp.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
const run = promisify(execFile);

/** TLS: QEMU's own, with x509 credentials (makeQemuTlsDir). multifd: `channels` connections beside the main one. */
export type QemuMode = 'plain' | 'multifd' | 'tls' | 'multifd-tls';

const MIGRATION_TIMEOUT_MS = 5 * 60_000;
const POLL_MS = 20;

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

/** The certificates' extensions: QEMU 10.0 refuses a certificate whose key usage leaves out keyEncipherment. */
const QEMU_TLS_EXTENSIONS = `[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
[peer]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost
`;

/**
 * QEMU's x509 credential directory (ca-cert.pem, server-*.pem, client-*.pem) from a throwaway CA,
 * made by openssl (ECDSA P-256); one certificate named `localhost` serves as both server and client.
 */
export async function makeQemuTlsDir(dir: string): Promise<string> {
  const creds = path.join(dir, 'qemu-tls');
  mkdirSync(creds, { mode: 0o700 });
  const file = (name: string) => path.join(creds, name);
  writeFileSync(file('extensions.cnf'), QEMU_TLS_EXTENSIONS, { mode: 0o600 });
  const openssl = (args: string[]) =>
    run('openssl', args, { cwd: creds, timeout: 30_000 }).catch((err: NodeJS.ErrnoException & { stderr?: string }) => {
      throw new FerryError(
        err.code === 'ENOENT' ? 'ERR_FERRY_NOT_FOUND' : 'ERR_FERRY_INTERNAL',
        `openssl (QEMU's TLS credentials): ${err.code === 'ENOENT' ? 'not installed' : (err.stderr ?? err.message).trim().slice(0, 300)}`,
      );
    });
  for (const key of ['ca-key.pem', 'server-key.pem'])
    await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  await openssl([
    'req',
    '-x509',
    '-new',
    '-key',
    'ca-key.pem',
    '-subj',
    '/CN=ferry bench QEMU CA',
    '-days',
    '2',
    '-out',
    'ca-cert.pem',
    '-extensions',
    'ca',
    '-config',
    'extensions.cnf',
  ]);
  await openssl(['req', '-new', '-key', 'server-key.pem', '-subj', '/CN=localhost', '-out', 'server.csr', '-config', 'extensions.cnf']);
  await openssl([
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca-cert.pem',
    '-CAkey',
    'ca-key.pem',
    '-CAcreateserial',
    '-days',
    '2',
    '-out',
    'server-cert.pem',
    '-extfile',
    'extensions.cnf',
    '-extensions',
    'peer',
  ]);
  copyFileSync(file('server-cert.pem'), file('client-cert.pem'));
  copyFileSync(file('server-key.pem'), file('client-key.pem'));
  return creds;
}

export interface QemuMoveOptions {
  mode: QemuMode;
  /** multifd channels in the multifd modes. */
  channels?: number;
  /** The x509 credential directory, for the TLS modes. */
  tlsDir?: string;
  /** `max-bandwidth`, bytes a second; always set (QEMU 7.2's default is 128 MiB/s), by default far above any link here. */
  maxBandwidth?: number;
  /** `downtime-limit`; QEMU's own default (300 ms) when left out. */
  downtimeLimitMs?: number;
  autoConverge?: boolean;
  /** `cont` the destination as soon as it has loaded the guest (a guest that ran at the source). */
  resumeDestination?: boolean;
  /** Called with each of the destination's TCP ports (the migration's; the NBD server's) before the source connects to it. */
  onListening?: (port: number) => void | Promise<void>;
  /**
   * Disks (their indices, src/guest/qemu/disks.ts node names) moved the way QEMU and libvirt move
   * them: an NBD server at the destination on TCP (under QEMU's TLS in the TLS modes), a
   * `blockdev-mirror` (sync full, write-blocking, as ferry's) into it at the source, RAM once every mirror is
   * in sync, and at the pause before switch-over each mirror ended with `block-job-cancel`.
   */
  disks?: readonly number[];
}

export interface QemuMove {
  mode: QemuMode;
  /** QEMU's query-migrate at the source once completed. */
  info: MigrationInfo;
  /** Wall-clock ms (QMP event timestamps): `migrate` sent, the source's STOP, the destination loaded, its RESUME. */
  startedAt: number;
  stoppedAt: number | null;
  loadedAt: number;
  resumedAt: number | null;
  /** With disks: ms from the first blockdev-mirror until every mirror was in sync, and the bytes the mirrors wrote. */
  disks: { readyMs: number; bytes: number } | null;
}

const wallMs = (e: QmpEvent) => e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
const isMultifd = (mode: QemuMode) => mode === 'multifd' || mode === 'multifd-tls';
const isTls = (mode: QemuMode) => mode === 'tls' || mode === 'multifd-tls';

/**
 * Sets both QEMUs up for `mode` (every setting given explicitly, so what an earlier migration of
 * the same QEMU set does not carry over), migrates over TCP and waits until the source completed
 * and the destination loaded the guest (and resumed it, when asked).
 */
export async function migrateByQemu(src: QmpClient, dst: QmpClient, o: QemuMoveOptions): Promise<QemuMove> {
  const multifd = isMultifd(o.mode);
  const tls = isTls(o.mode);
  if (tls && !o.tlsDir) throw new FerryError('ERR_FERRY_INPUT', `QEMU mode ${o.mode} needs a TLS credential directory`);
  const channels = o.channels ?? 2;
  const disks = o.disks ?? [];
  for (const [qmp, endpoint] of [
    [src, 'client'],
    [dst, 'server'],
  ] as const) {
    // Added at run time rather than on the command line, so the guest's command line stays the same in every mode.
    if (tls) await addTlsCreds(qmp, endpoint, o.tlsDir!);
    // Off what ferry's own moves of the same QEMU turned on (migrate-out.ts, migrate-in.ts): a
    // source left with pause-before-switchover waits at pre-switchover for a continue nobody sends.
    await qmp.migrateSetCapabilities({
      events: true,
      multifd,
      'return-path': false,
      'pause-before-switchover': qmp === src && disks.length > 0,
      'late-block-activate': false,
      'auto-converge': qmp === src && (o.autoConverge ?? false),
    });
    await qmp.execute('migrate-set-parameters', {
      'tls-creds': tls ? `tls-${endpoint}` : '',
      ...(multifd ? { 'multifd-channels': channels } : {}),
      ...(qmp === src
        ? {
            'max-bandwidth': o.maxBandwidth ?? UNCAPPED_BANDWIDTH,
            'tls-hostname': tls ? 'localhost' : '',
            ...(o.downtimeLimitMs !== undefined ? { 'downtime-limit': o.downtimeLimitMs } : {}),
          }
        : {}),
    });
  }
  let stoppedAt: number | null = null;
  const unsubscribe = src.onEvent((e) => {
    if (e.event === 'STOP' && stoppedAt === null) stoppedAt = wallMs(e);
  });
  const mirrors = disks.length ? new QemuMirrors(src, dst, disks, tls) : null;
  try {
    // eslint-disable-next-line no-restricted-properties -- compared with QEMU's event timestamps, which are wall-clock
    const startedAt = Date.now();
    if (mirrors) {
      await o.onListening?.(await mirrors.export());
      await mirrors.start();
    }
    // Port 0: the destination's kernel picks a free port, which query-migrate then names.
    await dst.migrateIncoming('tcp:127.0.0.1:0');
    const listening = (await dst.execute('query-migrate')) as { 'socket-address'?: { port?: string }[] };
    const port = Number(listening['socket-address']?.[0]?.port);
    if (!port) throw new FerryError('ERR_FERRY_INTERNAL', 'the destination QEMU did not say where it listens for the migration');
    await o.onListening?.(port);
    const loaded = dst.waitForEvent('MIGRATION', {
      timeoutMs: MIGRATION_TIMEOUT_MS,
      match: (e) => e.data.status === 'completed' || e.data.status === 'failed',
    });
    loaded.catch(() => {});
    await src.migrate(`tcp:127.0.0.1:${port}`);
    let info: MigrationInfo;
    try {
      info = await completion(src, o.mode, startedAt, mirrors);
    } catch (err) {
      // QEMU resumes a guest whose migration is cancelled, and a later migration of it can start.
      await src.migrateCancel().catch(() => {});
      throw err;
    }
    const done = await loaded;
    if (done.data.status !== 'completed')
      throw new FerryError('ERR_FERRY_QEMU', `QEMU migration (${o.mode}): the destination could not load the guest`);
    // As libvirt does: nothing writes through the exports any more before the guest runs there.
    await mirrors?.stopExports();
    let resumedAt: number | null = null;
    if (o.resumeDestination) {
      const resumed = dst.waitForEvent('RESUME', { timeoutMs: 10_000 });
      await dst.cont();
      resumedAt = wallMs(await resumed);
    }
    return { mode: o.mode, info, startedAt, stoppedAt, loadedAt: wallMs(done), resumedAt, disks: mirrors?.figures() ?? null };
  } catch (err) {
    await mirrors?.abandon();
    throw err;
  } finally {
    unsubscribe();
  }
}

const nbdExport = (index: number) => `bench-disk${index}`;
const nbdJob = (index: number) => `bench-mirror-disk${index}`;
const nbdNode = (index: number) => `bench-nbd-disk${index}`;

/** A TCP port free on 127.0.0.1 a moment ago: QEMU's NBD server takes no port 0 it would then name. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** QEMU alone's disk moves: the destination's NBD exports, the source's mirrors into them. */
class QemuMirrors {
  private started = 0;
  private readyMs = 0;
  private bytes = 0;
  private exporting = false;
  private attached: number[] = [];
  private port = 0;

  constructor(
    private readonly src: QmpClient,
    private readonly dst: QmpClient,
    private readonly disks: readonly number[],
    private readonly tls: boolean,
  ) {}

  /** The destination's NBD server and a writable export per disk; its port. */
  async export(): Promise<number> {
    const port = await freePort();
    await this.dst.execute('nbd-server-start', {
      addr: { type: 'inet', data: { host: '127.0.0.1', port: String(port) } },
      ...(this.tls ? { 'tls-creds': 'tls-server' } : {}),
    });
    this.exporting = true;
    for (const i of this.disks)
      // Exporting an inactive (incoming) node activates it for writing.
      await this.dst.execute('block-export-add', {
        type: 'nbd',
        id: nbdExport(i),
        'node-name': diskNode(i),
        name: nbdExport(i),
        writable: true,
      });
    this.port = port;
    return port;
  }

  /** Each disk mirrored into an NBD client of the export; returns once every mirror is in sync. */
  async start(): Promise<void> {
    this.started = performance.now();
    for (const i of this.disks) {
      await this.src.execute(
        'blockdev-add',
        {
          driver: 'nbd',
          'node-name': nbdNode(i),
          server: { type: 'inet', host: '127.0.0.1', port: String(this.port) },
          export: nbdExport(i),
          ...(this.tls ? { 'tls-creds': 'tls-client', 'tls-hostname': 'localhost' } : {}),
        },
        { timeoutMs: 60_000 },
      );
      this.attached.push(i);
      await this.src.execute('blockdev-mirror', {
        'job-id': nbdJob(i),
        device: diskNode(i),
        target: nbdNode(i),
        sync: 'full',
        'copy-mode': 'write-blocking',
      });
    }
    const deadline = performance.now() + MIGRATION_TIMEOUT_MS;
    for (;;) {
      const jobs = await this.jobs();
      const missing = this.disks.find((i) => !jobs.has(i));
      if (missing !== undefined) throw new FerryError('ERR_FERRY_QEMU', `QEMU's mirror of disk ${missing + 1} ended before it was in sync`);
      if ([...jobs.values()].every((j) => j.ready)) break;
      if (performance.now() > deadline) throw new FerryError('ERR_FERRY_TIMEOUT', "QEMU's disk mirrors were not in sync in time");
      await sleep(POLL_MS);
    }
    this.readyMs = Math.round(performance.now() - this.started);
  }

  private async jobs(): Promise<Map<number, { ready: boolean; offset: number }>> {
    const list = (await this.src.execute('query-block-jobs')) as { device?: string; ready?: boolean; offset?: number }[];
    const out = new Map<number, { ready: boolean; offset: number }>();
    for (const j of Array.isArray(list) ? list : []) {
      const i = this.disks.find((d) => nbdJob(d) === j.device);
      if (i !== undefined) out.set(i, { ready: j.ready === true, offset: Number(j.offset) || 0 });
    }
    return out;
  }

  /** At the source's pause before switch-over: each ready mirror ended, the target an exact copy. */
  async complete(): Promise<void> {
    const jobs = await this.jobs();
    this.bytes = [...jobs.values()].reduce((s, j) => s + j.offset, 0);
    for (const i of this.disks) await this.src.execute('block-job-cancel', { device: nbdJob(i) });
    const deadline = performance.now() + 60_000;
    while ((await this.jobs()).size > 0) {
      if (performance.now() > deadline) throw new FerryError('ERR_FERRY_TIMEOUT', "QEMU's disk mirrors did not end within 60 s");
      await sleep(POLL_MS);
    }
    await this.detach();
  }

  async stopExports(): Promise<void> {
    if (!this.exporting) return;
    this.exporting = false;
    await this.dst.execute('nbd-server-stop');
  }

  /** A move that failed: the mirrors cancelled, the clients and the exports gone. */
  async abandon(): Promise<void> {
    for (const i of this.disks) await this.src.execute('block-job-cancel', { device: nbdJob(i), force: true }).catch(() => {});
    const deadline = performance.now() + 10_000;
    while (performance.now() < deadline && (await this.jobs().catch(() => new Map())).size > 0) await sleep(POLL_MS);
    await this.detach();
    await this.stopExports().catch(() => {});
  }

  private async detach(): Promise<void> {
    for (const i of this.attached) await this.src.execute('blockdev-del', { 'node-name': nbdNode(i) }).catch(() => {});
    this.attached = [];
  }

  figures(): { readyMs: number; bytes: number } {
    return { readyMs: this.readyMs, bytes: this.bytes };
  }
}

async function addTlsCreds(qmp: QmpClient, endpoint: 'client' | 'server', dir: string): Promise<void> {
  await qmp.execute('object-add', { 'qom-type': 'tls-creds-x509', id: `tls-${endpoint}`, dir, endpoint, 'verify-peer': true });
}

/** Polls the source until its migration completed (with disks, ending the mirrors at the pause before switch-over); its figures then. */
async function completion(src: QmpClient, mode: QemuMode, startedAt: number, mirrors: QemuMirrors | null): Promise<MigrationInfo> {
  let switched = false;
  for (;;) {
    const info = await src.queryMigrate();
    if (info.status === 'pre-switchover' && mirrors && !switched) {
      switched = true;
      await mirrors.complete();
      await src.migrateContinue('pre-switchover');
      continue;
    }
    // eslint-disable-next-line no-restricted-properties -- started on the wall clock, as QEMU's timestamps are
    const overdue = Date.now() - startedAt > MIGRATION_TIMEOUT_MS;
    // QEMU 7.2 can answer "completed" a moment before it has filled in the times (seen once:
    // total-time 0, downtime 0, after 2 GiB crossed): ask again until they are there.
    if (info.status === 'completed' && (info.totalTimeMs ?? 0) > 0) return info;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new FerryError('ERR_FERRY_ABORTED', `QEMU migration (${mode}) ${info.status}: ${info.errorDesc ?? 'no reason given'}`);
    }
    if (overdue)
      throw new FerryError(
        'ERR_FERRY_TIMEOUT',
        `QEMU migration (${mode}) did not finish within ${MIGRATION_TIMEOUT_MS / 1000} s (status ${info.status})`,
      );
    await sleep(POLL_MS);
  }
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
      const connecting = QmpClient.connect(qmpPath, { timeoutMs: 60_000 });
      const first = await Promise.race([connecting, qemu.exited.then(() => null)]);
      if (first === null) {
        connecting.then(
          (c) => c.close(),
          () => {},
        );
        throw new FerryError('ERR_FERRY_INTERNAL', `QEMU (${name}) exited: ${qemu.stderr.trim()}`);
      }
      return { qemu, qmp: first };
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
  const mib = Math.round(o.memoryBytes / 2 ** 20);
  const common = ['-accel', 'tcg', '-nographic', '-nodefaults', '-S', '-m', `${mib}M`, '-machine', 'pc,memory-backend=ram0'];
  const started: { qemu: QemuProcess; qmp: QmpClient }[] = [];
  const start = async (name: string, args: string[]) => {
    const s = await QemuProcess.start(o.dir, `${name}-${o.mode}`, args);
    started.push(s);
    o.track?.(s.qemu);
    return s;
  };
  try {
    const dst = await start('dst', [...common, '-object', `memory-backend-ram,id=ram0,size=${mib}M`, '-incoming', 'defer']);
    const src = await start('src', [
      ...common,
      '-object',
      `memory-backend-file,id=ram0,size=${mib}M,mem-path=${o.ramFile},share=off,prealloc=on`,
    ]);
    const { info } = await migrateByQemu(src.qmp, dst.qmp, { mode: o.mode, tlsDir: o.tlsDir });
    return {
      mode: o.mode,
      status: info.status,
      totalMs: info.totalTimeMs ?? 0,
      downtimeMs: info.downtimeMs ?? 0,
      transferredBytes: info.ram?.transferred ?? 0,
      mbps: info.ram?.mbps ?? 0,
    };
  } finally {
    for (const s of started) {
      await s.qmp.close();
      await s.qemu.stop();
    }
  }
}
