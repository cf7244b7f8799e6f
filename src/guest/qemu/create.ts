/**
 * Making a QEMU guest's config on the host that will run it (`ferry vm create --driver qemu`), and
 * checking a host can run one it is sent (a migration's destination). The host chooses what only
 * it can know: the accelerator that works at speed here, whether it has the machine type, and the
 * files the guest boots from, copied into the guest directory with their digests.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { FerryError } from '../../errors.js';
import { defaulted, int, oneOf, optional, str } from '../../common/validate.js';
import type { GuestConfig, GuestCreateRequest, QemuConfig } from '../types.js';
import { BOOT_DIR, buildArgv } from './argv.js';
import { DEFAULT_MACHINE, MAX_APPEND_CHARS, MAX_BOOT_FILE_BYTES, MAX_CPUS, QEMU_FIELDS, type BootFile } from './config.js';
import { hostQemu } from './host.js';
import { resolveQemu } from './probe.js';
import { TEST_GUEST_IMAGE } from './test-guest.js';
import { admitDisks, createDisks, DISK_REQUESTS_FIELD } from './disks.js';

const run = promisify(execFile);

const absolutePath = str({ pattern: /^\/[^\0]*$/, max: 4096, describe: "an absolute path on the guest's host" });

export const QEMU_CREATE_FIELDS = {
  memoryBytes: QEMU_FIELDS.memoryBytes,
  cpus: defaulted(int({ min: 1, max: MAX_CPUS }), 1),
  accel: defaulted(oneOf(['auto', 'kvm', 'tcg'] as const), 'auto'),
  machine: optional(QEMU_FIELDS.machine),
  kernel: optional(absolutePath),
  initrd: optional(absolutePath),
  append: defaulted(str({ max: MAX_APPEND_CHARS }), ''),
  disks: DISK_REQUESTS_FIELD,
};

/** Copies `from` to `to` (0600), returning its size and SHA-256; refuses what is not a readable regular file of sane size. */
async function copyBootFile(from: string, to: string, what: string): Promise<BootFile> {
  const stat = await fs.stat(from).catch((err: NodeJS.ErrnoException) => {
    throw new FerryError('ERR_FERRY_NOT_FOUND', `${what} ${from}: ${err.code === 'ENOENT' ? 'no such file on this host' : err.code}`);
  });
  if (!stat.isFile()) throw new FerryError('ERR_FERRY_INPUT', `${what} ${from} is not a regular file`);
  if (stat.size === 0 || stat.size > MAX_BOOT_FILE_BYTES)
    throw new FerryError('ERR_FERRY_INPUT', `${what} ${from} has ${stat.size} bytes; 1 to ${MAX_BOOT_FILE_BYTES} are allowed`);
  const hash = createHash('sha256');
  await pipeline(
    createReadStream(from),
    async function* (source) {
      for await (const chunk of source) {
        hash.update(chunk as Buffer);
        yield chunk;
      }
    },
    createWriteStream(to, { mode: 0o600 }),
  );
  return { bytes: stat.size, sha256: hash.digest('hex') };
}

/** The machine types this host's QEMU has, asked once per process. */
let machines: Promise<Set<string>> | null = null;
async function hasMachine(name: string): Promise<boolean> {
  machines ??= (async () => {
    const { executable } = resolveQemu();
    if (!executable) return new Set<string>();
    const { stdout } = await run(executable, ['-machine', 'help'], { timeout: 10_000 });
    return new Set(
      stdout
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[0]!)
        .filter(Boolean),
    );
  })().catch(() => new Set<string>());
  return (await machines).has(name);
}

/** Refuses, with a coded error saying why, a QEMU guest this host cannot run (at `dir`, its disks: free space, shared images). */
export async function admitQemu(config: GuestConfig, dir?: string): Promise<void> {
  if (config.driver !== 'qemu') return;
  if (dir && config.disks?.length) await admitDisks(config.disks, dir, config.name);
  const q = await hostQemu();
  if (q.missing) throw new FerryError('ERR_FERRY_REFUSED', `this host cannot run QEMU guests: ${q.missing}`);
  const accel = q.accelerators[config.accel];
  if (!accel.usable)
    throw new FerryError(
      'ERR_FERRY_REFUSED',
      `guest ${config.name} runs on ${config.accel.toUpperCase()}, which this host's QEMU ${q.version} cannot use: ${accel.reason}`,
    );
  if (!(await hasMachine(config.machine)))
    throw new FerryError(
      'ERR_FERRY_REFUSED',
      `this host's QEMU ${q.version} has no machine type ${config.machine} (guest ${config.name}): upgrade QEMU here`,
    );
}

export async function createQemu(request: GuestCreateRequest, dir: string): Promise<QemuConfig> {
  if (request.driver !== 'qemu') throw new FerryError('ERR_FERRY_INTERNAL', 'not a QEMU guest');
  if (request.nic === 'sriov')
    throw new FerryError(
      'ERR_FERRY_REFUSED',
      'a passthrough NIC for a QEMU guest needs VFIO, which ferry does not manage: use --nic virtio',
    );
  const q = await hostQemu();
  if (q.missing || !q.chosen)
    throw new FerryError('ERR_FERRY_REFUSED', `this host cannot run QEMU guests: ${q.missing ?? 'neither KVM nor TCG works'}`);
  const accel = request.accel === 'auto' ? q.chosen : request.accel;
  const machine = request.machine ?? DEFAULT_MACHINE;
  const boot = path.join(dir, BOOT_DIR);
  await fs.mkdir(boot, { recursive: true, mode: 0o700 });
  const kernel = await copyBootFile(
    request.kernel ?? TEST_GUEST_IMAGE,
    path.join(boot, 'kernel'),
    request.kernel ? '--kernel' : "ferry's test guest",
  );
  const initrd = request.initrd ? await copyBootFile(request.initrd, path.join(boot, 'initrd'), '--initrd') : undefined;
  const disks = await createDisks(request.disks ?? [], dir);
  const { kernel: _k, initrd: _i, accel: _a, machine: _m, disks: _d, ...common } = request;
  const partial: Omit<QemuConfig, 'argv'> = {
    ...common,
    driver: 'qemu',
    accel,
    machine,
    uuid: randomUUID(),
    kernel,
    ...(initrd ? { initrd } : {}),
    ...(disks.length ? { disks } : {}),
  };
  const config: QemuConfig = { ...partial, argv: buildArgv(partial) };
  await admitQemu(config);
  return config;
}
