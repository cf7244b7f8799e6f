/**
 * The destination's disks in a migration, as migrate-in.ts drives them: same-size images made
 * (free space checked first) before its QEMU starts, exported over NBD for the source's mirrors
 * before READY; once everything arrived, the exports ended and, with --verify, the digests
 * compared with the source's; a migration that did not commit leaves no image behind.
 */
import { FerryError } from '../../errors.js';
import type { DiskMigrationFigures } from '../../migration/types.js';
import { array, obj, str, type Check } from '../../common/validate.js';
import type { QemuConfig } from '../types.js';
import { DISK_DIGEST_ALGORITHM, diskDigests } from './disk-digest.js';
import { mirroredDisks, prepareDestinationDisks, removeDestinationDisks } from './disks.js';
import { decode } from './messages.js';
import { DiskExports, nbdServerSocket } from './nbd-mirror.js';
import type { QmpClient } from './qmp.js';

const digestOrNull: Check<string | null> = (v, f) => (v === null ? null : str({ pattern: /^[0-9a-f]{64}$/ })(v, f));
const checkDigests = obj({ digests: array(digestOrNull, 8) });

export class DestinationDisks {
  private exports: DiskExports | null = null;
  private made = false;
  private sourceDigests: (string | null)[] | null = null;
  private digests: (string | null)[] | null = null;

  constructor(
    private readonly dir: string,
    private readonly config: QemuConfig,
  ) {}

  private get disks() {
    return this.config.disks ?? [];
  }

  /** Before QEMU starts: the images it opens. */
  async prepare(): Promise<void> {
    if (!this.disks.length) return;
    this.made = true;
    await prepareDestinationDisks(this.disks, this.dir, this.config.name);
  }

  /** Once QEMU listens for the migration: the NBD exports the source's mirrors write into. */
  async export(qmp: QmpClient): Promise<void> {
    this.exports = await DiskExports.start(qmp, this.dir, this.disks);
  }

  get socket(): string {
    return nbdServerSocket(this.dir);
  }

  /** The source's digests (DISK_DIGESTS_MSG), sent at its pause, before SOURCE_DONE. */
  takeSourceDigests(type: number, payload: Uint8Array): void {
    const { digests } = decode(type, payload, checkDigests);
    if (digests.length !== this.disks.length) throw new FerryError('ERR_FERRY_FRAME', 'disk digests for another number of disks');
    this.sourceDigests = digests;
  }

  /** Everything arrived (its QEMU completed, the source's too): no more writes through NBD; with verify, the digests must match. */
  async settle(qmp: QmpClient, verify: boolean): Promise<void> {
    await this.exports?.stop();
    this.exports = null;
    if (!verify || mirroredDisks(this.disks).length === 0) return;
    this.digests = await diskDigests(qmp, this.dir, this.disks);
    if (!this.sourceDigests) throw new FerryError('ERR_FERRY_ABORTED', 'the source sent no disk digests (--verify): not committed');
    const differs = this.digests.findIndex((d, i) => d !== this.sourceDigests![i]);
    if (differs >= 0)
      throw new FerryError('ERR_FERRY_ABORTED', `disk ${differs + 1} differs between the source and this host (--verify): not committed`);
  }

  /** Not committed (its QEMU is dead by now): the exports and every image made here gone. */
  async drop(): Promise<void> {
    await this.exports?.stop();
    this.exports = null;
    if (this.made) await removeDestinationDisks(this.dir);
  }

  figures(): DiskMigrationFigures | null {
    if (!this.disks.length) return null;
    const mirrored = new Set(mirroredDisks(this.disks).map((d) => d.index));
    return {
      bytes: 0,
      mirroredBytes: this.disks.filter((d) => !d.shared).reduce((s, d) => s + d.bytes, 0),
      sharedBytes: this.disks.filter((d) => d.shared).reduce((s, d) => s + d.bytes, 0),
      disks: this.disks.map((d, index) => ({ index, bytes: d.bytes, shared: !mirrored.has(index), mirroredBytes: 0 })),
      readyMs: null,
      ...(this.digests ? { digests: { algorithm: DISK_DIGEST_ALGORITHM, source: this.sourceDigests, destination: this.digests } } : {}),
    };
  }
}
