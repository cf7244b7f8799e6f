/**
 * A QEMU guest's disks: virtio-blk devices over raw or qcow2 images. Each disk is `disks/diskN` in
 * the guest directory on whichever host runs it, so the command line is the same on both ends of
 * a migration: a qcow2 ferry made there (a size given at create), a link to an image the operator
 * named (a file given at create), or, for a disk on shared storage, a link to the one file both
 * hosts see at the same path. A disk without shared storage is mirrored to a same-size image the
 * destination makes in its own guest directory (nbd-mirror.ts); one on shared storage is not copied.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { FerryError } from '../../errors.js';
import { array, bool, defaulted, int, obj, oneOf, optional, str, type Check } from '../../common/validate.js';
import { formatBytes } from '../../common/units.js';
import type { QemuDisk, QemuDiskRequest } from '../types.js';

const run = promisify(execFile);

export const DISKS_DIR = 'disks';
export const MAX_DISKS = 8;
/** QEMU's sector: an image's virtual size is a whole number of them. */
export const DISK_GRAIN = 512;
export const MIN_DISK_BYTES = 1 << 20;
export const MAX_DISK_BYTES = 2 ** 44;

export type DiskFormat = QemuDisk['format'];

const absolutePath = str({ pattern: /^\/[^\0,]*$/, max: 4096, describe: "an absolute path on the guest's host, without a comma" });
const diskBytes = int({ min: MIN_DISK_BYTES, max: MAX_DISK_BYTES, multipleOf: DISK_GRAIN });

export const DISKS_FIELD: Check<QemuDisk[]> & { optional: true } = defaulted(
  array(obj({ format: oneOf<DiskFormat>(['raw', 'qcow2']), bytes: diskBytes, shared: optional(absolutePath) }), MAX_DISKS),
  [],
);

export const DISK_REQUESTS_FIELD: Check<QemuDiskRequest[]> & { optional: true } = defaulted(
  array((v, field): QemuDiskRequest => {
    const d = obj({ bytes: optional(diskBytes), file: optional(absolutePath), shared: defaulted(bool, false) })(v, field);
    if ((d.bytes === undefined) === (d.file === undefined))
      throw new FerryError('ERR_FERRY_INPUT', `${field}: a size or a file, one of them`);
    if (d.shared && !d.file) throw new FerryError('ERR_FERRY_INPUT', `${field}: only an existing file can be on shared storage`);
    return { ...d, shared: d.shared === true };
  }, MAX_DISKS),
  [],
);

/** The image of disk `index` in guest directory `dir` (a file or a link). */
export function diskPath(dir: string, index: number): string {
  return path.join(dir, DISKS_DIR, `disk${index}`);
}

/** QEMU's node name of disk `index`: its format layer, what the device, the mirror and the exports use. */
export const diskNode = (index: number): string => `disk${index}`;

/** The command line's part for the disks; `dirToken` stands for the guest directory. */
export function diskArgv(disks: readonly QemuDisk[], dirToken: string): string[] {
  return disks.flatMap((d, i) => [
    '-blockdev',
    `driver=file,filename=${dirToken}/${DISKS_DIR}/disk${i},node-name=${diskNode(i)}-file`,
    '-blockdev',
    `driver=${d.format},file=${diskNode(i)}-file,node-name=${diskNode(i)}`,
    '-device',
    `virtio-blk-pci,drive=${diskNode(i)},id=${diskNode(i)}-blk`,
  ]);
}

/** Disks a migration copies (all but those on shared storage), with their index. */
export function mirroredDisks(disks: readonly QemuDisk[]): { index: number; disk: QemuDisk }[] {
  return disks.map((disk, index) => ({ index, disk })).filter(({ disk }) => !disk.shared);
}

interface ImageInfo {
  format: string;
  virtualBytes: number;
  backing: boolean;
  encrypted: boolean;
}

async function imageInfo(file: string, what: string): Promise<ImageInfo> {
  try {
    // -U: the operator's image may be open elsewhere (it is refused below if so, by QEMU's own lock at start).
    const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', file], { timeout: 30_000 });
    const info = JSON.parse(stdout) as Record<string, unknown>;
    return {
      format: String(info.format),
      virtualBytes: Number(info['virtual-size']),
      backing: info['backing-filename'] !== undefined,
      encrypted: info.encrypted === true,
    };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new FerryError('ERR_FERRY_REFUSED', 'this host has no qemu-img (Debian: apt-get install qemu-utils)');
    throw new FerryError('ERR_FERRY_INPUT', `${what}: qemu-img cannot read it: ${(e.stderr ?? e.message).trim().split('\n')[0]}`);
  }
}

/** Checks an operator's image: a regular file ferry can read and write, raw or qcow2, self-contained, not encrypted. */
async function existingImage(file: string, what: string): Promise<QemuDisk> {
  const stat = await fs.stat(file).catch((err: NodeJS.ErrnoException) => {
    throw new FerryError('ERR_FERRY_NOT_FOUND', `${what} ${file}: ${err.code === 'ENOENT' ? 'no such file on this host' : err.code}`);
  });
  if (!stat.isFile()) throw new FerryError('ERR_FERRY_INPUT', `${what} ${file} is not a regular file`);
  await fs.access(file, fs.constants.R_OK | fs.constants.W_OK).catch(() => {
    throw new FerryError('ERR_FERRY_REFUSED', `${what} ${file} is not readable and writable here`);
  });
  const info = await imageInfo(file, `${what} ${file}`);
  if (info.format !== 'raw' && info.format !== 'qcow2')
    throw new FerryError('ERR_FERRY_INPUT', `${what} ${file} is a ${info.format} image; ferry takes raw and qcow2`);
  if (info.backing) throw new FerryError('ERR_FERRY_INPUT', `${what} ${file} has a backing file; ferry moves self-contained images only`);
  if (info.encrypted) throw new FerryError('ERR_FERRY_INPUT', `${what} ${file} is encrypted, which ferry does not manage`);
  if (!Number.isSafeInteger(info.virtualBytes) || info.virtualBytes < MIN_DISK_BYTES || info.virtualBytes % DISK_GRAIN !== 0)
    throw new FerryError('ERR_FERRY_INPUT', `${what} ${file} has ${info.virtualBytes} bytes; at least 1 MiB in whole 512-byte sectors`);
  return { format: info.format, bytes: info.virtualBytes };
}

async function createImage(file: string, format: DiskFormat, bytes: number): Promise<void> {
  try {
    await run('qemu-img', ['create', '-q', '-f', format, file, String(bytes)], { timeout: 60_000 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new FerryError('ERR_FERRY_REFUSED', 'this host has no qemu-img (Debian: apt-get install qemu-utils)');
    throw new FerryError('ERR_FERRY_QEMU', `qemu-img could not create ${file}: ${(e.stderr ?? e.message).trim()}`);
  }
  await fs.chmod(file, 0o600);
}

/** At create: each requested disk made (a new qcow2) or linked (an image in place) into `dir/disks`. */
export async function createDisks(requests: readonly QemuDiskRequest[], dir: string): Promise<QemuDisk[]> {
  if (requests.length === 0) return [];
  await fs.mkdir(path.join(dir, DISKS_DIR), { recursive: true, mode: 0o700 });
  const disks: QemuDisk[] = [];
  for (const [i, r] of requests.entries()) {
    const file = diskPath(dir, i);
    if (r.file) {
      const disk = await existingImage(r.file, `--disk ${i + 1}`);
      await fs.symlink(r.file, file);
      disks.push(r.shared ? { ...disk, shared: r.file } : disk);
    } else {
      await createImage(file, 'qcow2', r.bytes!);
      disks.push({ format: 'qcow2', bytes: r.bytes! });
    }
  }
  return disks;
}

/** The filesystem that holds `dir` (or would: its nearest existing ancestor), and its bytes free to us. */
async function freeBytesAt(dir: string): Promise<number> {
  for (let at = dir; ; at = path.dirname(at)) {
    try {
      const s = await fs.statfs(at);
      return s.bavail * s.bsize;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || at === path.dirname(at)) throw err;
    }
  }
}

/**
 * Refuses, before anything is made, a guest whose copied disks this host cannot hold at `dir`:
 * every mirrored disk counted at its virtual size (a full mirror may allocate all of it), and each
 * shared image present here at its path, with its size.
 */
export async function admitDisks(disks: readonly QemuDisk[], dir: string, name: string): Promise<void> {
  for (const [i, d] of disks.entries()) {
    if (!d.shared) continue;
    const stat = await fs.stat(d.shared).catch(() => null);
    if (!stat?.isFile())
      throw new FerryError(
        'ERR_FERRY_REFUSED',
        `guest ${name}'s disk ${i + 1} is on shared storage at ${d.shared}, which this host does not see`,
      );
  }
  const need = mirroredDisks(disks).reduce((sum, { disk }) => sum + disk.bytes, 0);
  if (need === 0) return;
  const free = await freeBytesAt(dir);
  if (free < need)
    throw new FerryError(
      'ERR_FERRY_REFUSED',
      `guest ${name}'s disks need ${formatBytes(need)} here and the filesystem of ${path.dirname(dir)} has ${formatBytes(free)} free`,
    );
}

/** At a migration's destination: same-size, same-format images for the mirror, links for shared disks. */
export async function prepareDestinationDisks(disks: readonly QemuDisk[], dir: string, name: string): Promise<void> {
  if (disks.length === 0) return;
  await admitDisks(disks, dir, name);
  await fs.mkdir(path.join(dir, DISKS_DIR), { recursive: true, mode: 0o700 });
  for (const [i, d] of disks.entries()) {
    const file = diskPath(dir, i);
    await fs.rm(file, { force: true });
    if (d.shared) await fs.symlink(d.shared, file);
    else await createImage(file, d.format, d.bytes);
  }
}

/** A destination that did not commit: its images gone (a link to a shared image goes, never the image). */
export async function removeDestinationDisks(dir: string): Promise<void> {
  await fs.rm(path.join(dir, DISKS_DIR), { recursive: true, force: true });
}

/** What became of the source's images after a commit. */
export interface SourceImages {
  /** kept: left where they were; removed: deleted (--remove-source-disks); shared: the destination uses them. */
  disks: { index: number; action: 'kept' | 'removed' | 'shared'; path: string }[];
}

/**
 * After a commit, the source's images: those the guest's directory held are moved beside it (the
 * agent removes the directory), to `GUESTDIR.disks-MIGRATION/diskN`; an image the operator named
 * stays where it is; with `remove`, both are deleted. Shared images are the destination's now.
 */
export async function leaveSourceDisks(
  dir: string,
  disks: readonly QemuDisk[],
  migrationId: string,
  remove: boolean,
): Promise<SourceImages> {
  const out: SourceImages['disks'] = [];
  const keep = `${dir}.disks-${migrationId}`;
  for (const [index, d] of disks.entries()) {
    const file = diskPath(dir, index);
    if (d.shared) {
      out.push({ index, action: 'shared', path: d.shared });
      continue;
    }
    const link = await fs.readlink(file).catch(() => null);
    const image = link ? path.resolve(path.dirname(file), link) : file;
    if (remove) {
      await fs.rm(image, { force: true });
      out.push({ index, action: 'removed', path: image });
    } else if (link) {
      out.push({ index, action: 'kept', path: image });
    } else {
      await fs.mkdir(keep, { recursive: true, mode: 0o700 });
      const to = path.join(keep, `disk${index}.${d.format}`);
      await fs.rename(file, to);
      out.push({ index, action: 'kept', path: to });
    }
  }
  return { disks: out };
}
