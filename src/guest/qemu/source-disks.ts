/**
 * The source's disks in a migration, as migrate-out.ts drives them: mirrored (nbd-mirror.ts) and
 * in sync before RAM starts; at the pause before switch-over, the mirrors finished and, with
 * --verify, the disks' digests taken and sent ahead of SOURCE_DONE; after a failure, the mirrors
 * dropped so the disks are the source's alone; after a commit, the images kept or removed.
 */
import type { Channel } from '../../channel/types.js';
import type { StreamMux } from '../../channel/streams.js';
import { FerryError } from '../../errors.js';
import type { DiskMigrationFigures, MigrationEvent } from '../../migration/types.js';
import type { QemuConfig } from '../types.js';
import { DISK_DIGEST_ALGORITHM, DISK_DIGESTS_MSG, diskDigests } from './disk-digest.js';
import { leaveSourceDisks, type SourceImages } from './disks.js';
import { encode } from './messages.js';
import { DiskMirrors } from './nbd-mirror.js';
import type { QmpClient } from './qmp.js';

export class SourceDisks {
  private readonly mirrors: DiskMirrors;
  private digests: (string | null)[] | null = null;
  private images: SourceImages | null = null;
  /** --verify with nothing to compare: why. */
  private unverifiable: string | null = null;

  constructor(
    private readonly qmp: QmpClient,
    private readonly dir: string,
    private readonly config: QemuConfig,
    mux: StreamMux,
    private readonly channel: Channel,
  ) {
    this.mirrors = new DiskMirrors(qmp, dir, config.disks ?? [], mux);
  }

  /** Starts every mirror and waits until all are in sync (`stop`: why to give up meanwhile). */
  async mirror(stop: () => FerryError | null, emit: (e: MigrationEvent) => void): Promise<void> {
    await this.mirrors.start();
    await this.mirrors.ready(stop, emit);
  }

  /** At pre-switchover (the guest paused): the mirrors end, then the digests if asked. */
  async finish(verify: boolean): Promise<void> {
    await this.mirrors.complete();
    if (!verify || !(this.config.disks ?? []).length) return;
    if (!this.mirrors.any) {
      this.unverifiable = 'every disk is on shared storage: both ends use the one image, there is nothing to compare';
      return;
    }
    this.digests = await diskDigests(this.qmp, this.dir, this.config.disks ?? []);
    await this.channel.send(DISK_DIGESTS_MSG, encode({ digests: this.digests }));
  }

  abandon(): Promise<void> {
    return this.mirrors.abandon();
  }

  async leave(migrationId: string, remove: boolean): Promise<void> {
    if (!(this.config.disks ?? []).length) return;
    this.images = await leaveSourceDisks(this.dir, this.config.disks ?? [], migrationId, remove);
  }

  figures(): DiskMigrationFigures | null {
    if (!(this.config.disks ?? []).length) return null;
    return {
      ...this.mirrors.figures(),
      ...(this.digests ? { digests: { algorithm: DISK_DIGEST_ALGORITHM, source: this.digests, destination: null } } : {}),
      ...(this.unverifiable
        ? { digests: { algorithm: DISK_DIGEST_ALGORITHM, source: null, destination: null, unavailable: this.unverifiable } }
        : {}),
      ...(this.images ? { sourceImages: this.images.disks } : {}),
    };
  }
}
