/**
 * The destination side of a QEMU guest's migration (docs/migration.md, "QEMU guests"): it takes
 * the guest's config and boot files, starts its own QEMU paused (`-S -incoming defer`), connects to
 * it each stream the source opened, in the order the source accepted them (a QEMU 7.2
 * destination takes the first connection as the main one), and decides. It commits only once its
 * own QEMU has loaded everything and the source's QEMU completed (SOURCE_DONE): the agent records
 * ownership, then `cont` and an announce, then COMMITTED. Not committed: its QEMU is killed first,
 * and only then is the source told (ABORT), so the two never run at once.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import path from 'node:path';
import { FerryError, toFerryError } from '../../errors.js';
import { Deferred, sleep, withTimeout } from '../../common/async.js';
import type { Channel } from '../../channel/types.js';
import { StreamMux } from '../../channel/streams.js';
import { Outcome } from '../../migration/outcome.js';
import type { MigrationEvent, MigrationResult } from '../../migration/types.js';
import { configOf } from '../config.js';
import type { QemuConfig } from '../types.js';
import { BOOT_DIR } from './argv.js';
import { BOOT_FILE_NAMES, type BootFileName } from './config.js';
import { Qemu } from './hypervisor.js';
import {
  checkAbort,
  checkBegin,
  checkSourceDone,
  decode,
  encode,
  QEMU_ENGINE_VERSION,
  QMSG,
  type Begin,
  type SourceDone,
} from './messages.js';
import { StatusWatch } from './progress.js';
import { canDigest, ramDigest } from './ram-digest.js';
import { DISK_DIGESTS_MSG } from './disk-digest.js';
import { DestinationDisks } from './destination-disks.js';
import { isDiskStream } from './nbd-mirror.js';

/** The socket the destination QEMU listens on for the incoming migration, in the guest directory. */
export const MIGRATE_IN_SOCKET = 'migrate-in.sock';
const POLL_MS = 200;

export interface QemuDestinationContext {
  config: QemuConfig;
  dir: string;
  /** The agent's decision at ready-to-commit (it records ownership durably before 'commit'). */
  decide(): Promise<'commit' | 'abort'>;
  emit(event: MigrationEvent): void;
  /** The QEMU started for the guest, before it loads anything: its guest process kills it should it stop before the commit. */
  started?(qemu: Qemu): void;
}

export interface QemuArrival {
  result: MigrationResult;
  /** The guest's QEMU, running here, once committed; null otherwise (and no QEMU is left). */
  qemu: Qemu | null;
}

export async function migrateQemuIn(channel: Channel, ctx: QemuDestinationContext): Promise<QemuArrival> {
  return new QemuDestination(channel, ctx).run();
}

class QemuDestination {
  private readonly outcome: Outcome;
  private readonly started = performance.now();
  private readonly cpu = process.cpuUsage();
  private mux: StreamMux | null = null;
  private qemu: Qemu | null = null;
  private readonly begun = new Deferred<Begin>();
  private readonly sourceDone = new Deferred<SourceDone>();
  /** Boot files as they arrive: their hashes, and what is written so far. */
  private readonly files = new Map<
    number,
    { name: BootFileName; hash: ReturnType<typeof createHash>; written: number; handle: fs.FileHandle }
  >();
  private connecting = Promise.resolve();
  private failure: FerryError | null = null;
  private readonly wake = new StatusWatch();
  private readonly disks: DestinationDisks;

  constructor(
    private readonly channel: Channel,
    private readonly ctx: QemuDestinationContext,
  ) {
    this.outcome = new Outcome('destination', channel.migrationId);
    this.disks = new DestinationDisks(ctx.dir, ctx.config);
  }

  async run(): Promise<QemuArrival> {
    const receiving = this.receive();
    try {
      const begin = await this.begun.promise;
      await this.startQemu(begin);
      const digest = await this.load(begin);
      await this.decide(digest);
    } catch (err) {
      if (this.outcome.outcome !== 'committed') await this.fail(toFerryError(err));
    }
    void receiving;
    return { result: this.result(), qemu: this.outcome.outcome === 'committed' ? this.qemu : null };
  }

  private async receive(): Promise<void> {
    try {
      for (;;) {
        const m = await this.channel.receive();
        if (m === null) throw new FerryError('ERR_FERRY_NETWORK', 'the source ended the channel before the hand-off');
        if (this.mux) {
          const r = this.mux.handle(m);
          if (typeof r === 'object') {
            this.connectStream(r.open);
            continue;
          }
          if (r) continue;
        }
        switch (m.type) {
          case QMSG.BEGIN:
            if (this.begun.settled) throw new FerryError('ERR_FERRY_FRAME', 'a second BEGIN');
            this.begun.resolve(this.checkBegin(decode(m.type, m.payload, checkBegin)));
            break;
          case QMSG.FILE:
            await this.takeFile(m.payload);
            break;
          case DISK_DIGESTS_MSG:
            this.disks.takeSourceDigests(m.type, m.payload);
            break;
          case QMSG.SOURCE_DONE:
            this.sourceDone.resolve(decode(m.type, m.payload, checkSourceDone));
            break;
          case QMSG.ABORT: {
            const a = decode(m.type, m.payload, checkAbort);
            throw new FerryError('ERR_FERRY_ABORTED', `the source gave up: ${a.message} (${a.code})`);
          }
          default:
            throw new FerryError(
              'ERR_FERRY_FRAME',
              `the source sent message type ${m.type} ${this.mux ? '' : 'before BEGIN '}that the qemu engine does not take here`,
            );
        }
      }
    } catch (err) {
      const e = toFerryError(err, 'ERR_FERRY_NETWORK');
      this.failure ??= e;
      this.wake.set('failed');
      this.mux?.abort(e);
      this.begun.reject(e);
      this.sourceDone.reject(e);
    }
  }

  /** The source's config must be the one this host's agent was given for the migration. */
  private checkBegin(begin: Begin): Begin {
    if (begin.version !== QEMU_ENGINE_VERSION)
      throw new FerryError('ERR_FERRY_REFUSED', `the source speaks qemu engine ${begin.version}, this host ${QEMU_ENGINE_VERSION}`);
    if (JSON.stringify(configOf(begin.config as QemuConfig)) !== JSON.stringify(configOf(this.ctx.config))) {
      throw new FerryError('ERR_FERRY_REFUSED', "the source's guest config differs from the one the coordinator gave this host");
    }
    this.mux = new StreamMux(this.channel, { windowBytes: begin.windowBytes });
    return begin;
  }

  /** One piece of a boot file: u8 index, then its next bytes. */
  private async takeFile(payload: Uint8Array): Promise<void> {
    if (!this.mux) throw new FerryError('ERR_FERRY_FRAME', 'a boot file before BEGIN');
    const index = payload[0];
    const name = index === undefined ? undefined : BOOT_FILE_NAMES[index];
    const expect = name ? this.ctx.config[name] : undefined;
    if (!name || !expect) throw new FerryError('ERR_FERRY_FRAME', `a boot file this guest does not have (index ${index})`);
    let f = this.files.get(index!);
    if (!f) {
      const dir = path.join(this.ctx.dir, BOOT_DIR);
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      f = { name, hash: createHash('sha256'), written: 0, handle: await fs.open(path.join(dir, `${name}.partial`), 'w', 0o600) };
      this.files.set(index!, f);
    }
    const bytes = payload.subarray(1);
    if (f.written + bytes.length > expect.bytes)
      throw new FerryError('ERR_FERRY_FRAME', `boot file ${name} is longer than its ${expect.bytes} bytes`);
    await f.handle.write(bytes);
    f.hash.update(bytes);
    f.written += bytes.length;
  }

  /** Every boot file whole and as the config says, in place; then QEMU, paused, listening for the streams. */
  private async startQemu(begin: Begin): Promise<void> {
    const { config, dir } = this.ctx;
    // FILE messages follow BEGIN: wait until the last one is in.
    for (const [index, name] of BOOT_FILE_NAMES.entries()) {
      if (!config[name]) continue;
      while ((this.files.get(index)?.written ?? -1) < config[name]!.bytes) {
        if (this.failure) throw this.failure;
        await sleep(5);
      }
      const f = this.files.get(index)!;
      await f.handle.close();
      if (f.hash.digest('hex') !== config[name]!.sha256)
        throw new FerryError('ERR_FERRY_REFUSED', `boot file ${name} arrived with another digest than the config's`);
      await fs.rename(path.join(dir, BOOT_DIR, `${name}.partial`), path.join(dir, BOOT_DIR, name));
    }
    await this.disks.prepare();
    this.qemu = await Qemu.start(config, dir, { incoming: true });
    this.ctx.started?.(this.qemu);
    const qmp = this.qemu.qmp;
    await qmp.migrateSetCapabilities({
      events: true,
      'return-path': true,
      multifd: begin.multifdChannels > 0,
      'late-block-activate': true,
    });
    if (begin.multifdChannels > 0) await qmp.migrateSetParameters({ multifdChannels: begin.multifdChannels });
    await fs.rm(path.join(dir, MIGRATE_IN_SOCKET), { force: true });
    await qmp.migrateIncoming(`unix:${path.join(dir, MIGRATE_IN_SOCKET)}`);
    await this.disks.export(qmp);
    await this.channel.send(QMSG.READY, encode({ qemuVersion: `${qmp.version.major}.${qmp.version.minor}.${qmp.version.micro}` }));
  }

  /** Connects stream `id` to QEMU, after every stream opened before it: accept order is QEMU's channel order. */
  private connectStream(id: number): void {
    // A disk's NBD connection goes to the NBD server, whenever it comes: only QEMU's migration connections keep an order.
    const disk = isDiskStream(id);
    const file = disk ? this.disks.socket : path.join(this.ctx.dir, MIGRATE_IN_SOCKET);
    const connected = (disk ? Promise.resolve() : this.connecting).then(
      () =>
        new Promise<void>((resolve) => {
          const socket: Socket = createConnection({ path: file, allowHalfOpen: true });
          const refused = (err: Error): void => {
            this.failure ??= new FerryError('ERR_FERRY_QEMU', `cannot connect stream ${id} to this host's QEMU: ${err.message}`);
            resolve();
          };
          socket.once('error', refused);
          socket.once('connect', () => {
            // Connected, the stream is the mux's: a reset later (QEMU closing a channel it is done
            // with, or failing, which its own status says) is not a failure to connect.
            socket.off('error', refused);
            try {
              this.mux?.accept(id, socket);
            } catch {
              socket.destroy();
            }
            resolve();
          });
        }),
    );
    if (!disk) this.connecting = connected;
  }

  /** Until this QEMU has loaded everything and the source's QEMU completed; the RAM digest if asked. */
  private async load(begin: Begin): Promise<string | null> {
    const qemu = this.qemu!;
    let lastReceived = -1;
    // QEMU's MIGRATION events and SOURCE_DONE wake the loop at once: the guest is paused meanwhile.
    const unsubscribe = qemu.qmp.onEvent((e) => {
      if (e.event === 'MIGRATION') this.wake.set(String(e.data.status));
    });
    void this.sourceDone.promise.then(
      () => this.wake.set('source-done'),
      () => this.wake.set('failed'),
    );
    try {
      await this.loaded(qemu, () => {
        const received = this.channel.stats.bytesReceived;
        if (received !== lastReceived) {
          lastReceived = received;
          this.ctx.emit({ type: 'progress', role: 'destination', pass: 0, bytesReceived: received });
        }
      });
    } finally {
      unsubscribe();
    }
    const done = await this.sourceDone.promise;
    this.outcome.sourceDigest = done.digest;
    await this.disks.settle(qemu.qmp, begin.verify);
    if (!begin.verify) return null;
    if (!canDigest(this.ctx.config.memoryBytes)) return null;
    const digest = await ramDigest(qemu.qmp, this.ctx.dir, this.ctx.config.memoryBytes);
    this.outcome.destinationDigest = digest;
    if (done.digest !== null && digest !== done.digest)
      throw new FerryError('ERR_FERRY_ABORTED', 'guest RAM differs between the source and this host (--verify): not committed');
    return digest;
  }

  private async loaded(qemu: Qemu, onProgress: () => void): Promise<void> {
    for (;;) {
      if (this.failure) throw this.failure;
      if (!qemu.alive) throw new FerryError('ERR_FERRY_QEMU', "this host's QEMU exited while it loaded the guest");
      const info = await qemu.qmp.queryMigrate();
      if (info.status === 'failed' || info.status === 'cancelled')
        throw new FerryError('ERR_FERRY_QEMU', `this host's QEMU could not load the guest (${info.status})`);
      onProgress();
      if (info.status === 'completed' && this.sourceDone.settled) return;
      await this.wake.changed(POLL_MS);
    }
  }

  private async decide(digest: string | null): Promise<void> {
    this.ctx.emit({ type: 'ready-to-commit', sourceDigest: this.outcome.sourceDigest, digest });
    const decision = await this.ctx.decide();
    if (decision === 'abort') throw new FerryError('ERR_FERRY_ABORTED', 'the destination agent decided not to commit');
    // Ownership is recorded: from here this QEMU is the guest, whatever else fails.
    this.outcome.outcome = 'committed';
    const qmp = this.qemu!.qmp;
    for (let attempt = 1; ; attempt++) {
      try {
        await qmp.cont();
        break;
      } catch (err) {
        if (attempt === 5 || !this.qemu!.alive) {
          this.outcome.error = {
            code: toFerryError(err).code,
            message: `committed, but QEMU did not resume: ${toFerryError(err).message}`,
          };
          break;
        }
        await sleep(200);
      }
    }
    // QEMU announced the guest's MAC when it loaded it; once more now that it runs here.
    await qmp.execute('announce-self', { initial: 50, max: 550, rounds: 5, step: 100 }).catch(() => {});
    this.ctx.emit({ type: 'committed', downtimeMs: null });
    await withTimeout(
      this.channel.send(QMSG.COMMITTED, encode({ digest: this.outcome.destinationDigest })),
      5000,
      () => new Error('timeout'),
    ).catch(() => {});
    void withTimeout(this.channel.end(), 5000, () => new Error('timeout')).catch(() => this.channel.close());
  }

  /** Not committed: this host's QEMU killed first, then the source told, and no boot file left half-written. */
  private async fail(err: FerryError): Promise<void> {
    this.outcome.outcome = 'aborted';
    this.outcome.error = { code: err.code, message: err.message };
    this.mux?.abort(err);
    await this.qemu?.kill().catch(() => {});
    this.qemu = null;
    await this.disks.drop().catch(() => {});
    for (const f of this.files.values()) await f.handle.close().catch(() => {});
    if (!this.channel.error) {
      await withTimeout(
        this.channel.send(QMSG.ABORT, encode({ code: err.code, message: err.message })),
        2000,
        () => new Error('timeout'),
      ).catch(() => {});
    }
    this.channel.close();
    this.ctx.emit({ type: 'aborted', code: err.code, message: err.message });
  }

  private result(): MigrationResult {
    const stats = this.channel.stats;
    return {
      ...this.outcome.result({
        passes: [],
        totalMs: performance.now() - this.started,
        bytesSent: stats.bytesSent,
        bytesReceived: stats.bytesReceived,
        zeroPagesSkipped: 0,
        throttlePercent: 0,
        cpu: process.cpuUsage(this.cpu),
        channel: this.channel,
      }),
      disks: this.disks.figures(),
    };
  }
}
