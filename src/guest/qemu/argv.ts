/**
 * The QEMU command line of a guest, made from its config and nothing else, so that the source and
 * the destination of a migration run the same virtual machine: a pinned machine type, a fixed
 * uuid, the accelerator chosen at create, a CPU model every x86 host has (qemu64), no default
 * devices, the serial console into a log in the guest directory, QMP on a unix socket beside it.
 * `{dir}` stands for the guest directory of whichever host runs it; the config records the result
 * (its `argv`), and a host whose ferry would build a different command line refuses the guest.
 */
import { FerryError } from '../../errors.js';
import type { QemuConfig } from '../types.js';
import { diskArgv } from './disks.js';

export const DIR = '{dir}';
export const QMP_SOCKET = 'qmp.sock';
export const CONSOLE_LOG = 'console.log';
export const QEMU_PID_FILE = 'qemu.pid';
export const BOOT_DIR = 'boot';

/** A MAC address of the locally administered range, the same for a guest wherever it runs. */
export function macOf(uuid: string): string {
  const hex = uuid.replace(/-/g, '');
  return ['52', '54', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4, 6), hex.slice(6, 8)].join(':');
}

/** QEMU's -name and option values may not hold a comma unescaped (it doubles them). */
const option = (text: string) => text.replace(/,/g, ',,');

export function buildArgv(config: Omit<QemuConfig, 'argv'>): string[] {
  const argv = [
    '-name',
    `guest=${option(config.name)},debug-threads=on`,
    '-uuid',
    config.uuid,
    '-machine',
    `${config.machine},accel=${config.accel}`,
    '-cpu',
    'qemu64',
    '-smp',
    String(config.cpus),
    '-m',
    `${config.memoryBytes / (1 << 20)}M`,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-chardev',
    `file,id=console,path=${DIR}/${CONSOLE_LOG},append=on`,
    '-serial',
    'chardev:console',
    '-qmp',
    `unix:${DIR}/${QMP_SOCKET},server=on,wait=off`,
    '-kernel',
    `${DIR}/${BOOT_DIR}/kernel`,
  ];
  if (config.initrd) argv.push('-initrd', `${DIR}/${BOOT_DIR}/initrd`);
  if (config.append) argv.push('-append', config.append);
  // The guest's NIC: on a hub of its own (QEMU's hubport), so it needs nothing of the host, and is
  // still there to announce itself after a migration.
  argv.push('-netdev', 'hubport,id=net0,hubid=0', '-device', `virtio-net-pci,netdev=net0,mac=${macOf(config.uuid)}`);
  argv.push(...diskArgv(config.disks ?? [], DIR));
  argv.push('-pidfile', `${DIR}/${QEMU_PID_FILE}`, '-daemonize');
  return argv;
}

/** The command line for this host: `{dir}` replaced; a destination adds the incoming options. */
export function hostArgv(config: QemuConfig, dir: string, options: { incoming?: boolean } = {}): string[] {
  const expected = buildArgv(config);
  if (expected.length !== config.argv.length || expected.some((a, i) => a !== config.argv[i])) {
    throw new FerryError(
      'ERR_FERRY_REFUSED',
      `guest ${config.name} was created with a QEMU command line this ferry would not build: upgrade this host's ferry to the version of the host that created it`,
    );
  }
  if (dir.includes(',')) throw new FerryError('ERR_FERRY_INPUT', `guest directory ${dir} has a comma, which QEMU's options cannot hold`);
  const argv = config.argv.map((a) => a.split(DIR).join(dir));
  if (options.incoming) argv.push('-incoming', 'defer', '-S');
  return argv;
}
