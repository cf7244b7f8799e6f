/**
 * The qemu driver's part of a guest config: what the QEMU command line is built from (argv.ts),
 * pinned so that both ends of a migration run the same virtual machine — the machine type, the
 * accelerator, a fixed uuid, and the files the guest boots from (copied into the guest directory
 * at create, and carried by each migration, so a destination needs no copy of its own).
 */
import { array, defaulted, int, obj, oneOf, optional, str, type Check } from '../../common/validate.js';
import { DISKS_FIELD } from './disks.js';

export const MIN_MEMORY_BYTES = 16 << 20;
/** A guest's memory is whole MiB (QEMU's -m). */
export const MEMORY_GRAIN = 1 << 20;
export const MAX_MEMORY_BYTES = 2 ** 40;
export const MAX_CPUS = 64;
/** Machine type ferry pins new guests to: present in QEMU 7.2 and in every later QEMU to date. */
export const DEFAULT_MACHINE = 'pc-i440fx-7.2';
/** The files a guest boots from, at most (a kernel and an initramfs). */
export const MAX_BOOT_FILE_BYTES = 512 << 20;
export const MAX_APPEND_CHARS = 4096;

export type QemuAccelerator = 'kvm' | 'tcg';

/** A file the guest boots from, kept in the guest directory as boot/NAME. */
export interface BootFile {
  bytes: number;
  sha256: string;
}

export const BOOT_FILE_NAMES = ['kernel', 'initrd'] as const;
export type BootFileName = (typeof BOOT_FILE_NAMES)[number];

const bootFile: Check<BootFile> = obj({
  bytes: int({ min: 1, max: MAX_BOOT_FILE_BYTES }),
  sha256: str({ pattern: /^[0-9a-f]{64}$/, describe: 'a SHA-256 in hex' }),
});

export const QEMU_FIELDS = {
  memoryBytes: int({ min: MIN_MEMORY_BYTES, max: MAX_MEMORY_BYTES, multipleOf: MEMORY_GRAIN }),
  cpus: defaulted(int({ min: 1, max: MAX_CPUS }), 1),
  machine: str({ pattern: /^[a-z0-9][a-z0-9._-]{0,63}$/, describe: 'a QEMU machine type' }),
  accel: oneOf<QemuAccelerator>(['kvm', 'tcg']),
  uuid: str({ pattern: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, describe: 'a lower-case uuid' }),
  kernel: bootFile,
  initrd: optional(bootFile),
  append: defaulted(str({ max: MAX_APPEND_CHARS }), ''),
  /** Its disks, in the order of their virtio-blk devices (disks.ts). */
  disks: DISKS_FIELD,
  /** The exact QEMU command line (without the binary), `{dir}` for the guest directory: argv.ts makes it. */
  argv: array(str({ max: 8192 }), 200, 1),
};
