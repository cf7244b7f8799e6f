/**
 * The qemu driver, as the agent sees it (src/guest/driver.ts): per guest, a ferry process
 * (main.ts) that runs a QEMU detached beside it, speaks QMP to it, and carries its migration
 * stream through ferry's channel.
 */
import type { GuestDriver } from '../driver.js';
import { compiledEntry } from '../files.js';
import { QEMU_FIELDS } from './config.js';
import { admitQemu, createQemu, QEMU_CREATE_FIELDS } from './create.js';
import { hostQemu } from './host.js';
import { killLeftQemu, qemuRuns } from './hypervisor.js';

export const qemuDriver: GuestDriver = {
  name: 'qemu',
  configFields: QEMU_FIELDS,
  createFields: QEMU_CREATE_FIELDS,
  create: createQemu,
  admit: admitQemu,
  outlivesProcess: (dir, config) => config.driver === 'qemu' && qemuRuns(dir, config),
  endLeft: async (dir, config) => config.driver === 'qemu' && killLeftQemu(dir, config),
  entry: () => compiledEntry('guest/qemu/main.js'),
  describe: (c) => (c.driver === 'qemu' ? `${c.cpus} CPU${c.cpus === 1 ? '' : 's'}, ${c.machine}, ${c.accel.toUpperCase()}` : ''),
  availability: async () => {
    const q = await hostQemu();
    const version = q.version ? { version: q.version } : {};
    if (q.missing || !q.chosen)
      return { available: false, detail: q.missing ?? `QEMU ${q.version} runs no guest here: ${q.accelerators.tcg.reason}`, ...version };
    const detail = `QEMU ${q.version}, ${q.chosen.toUpperCase()}${q.chosen === 'tcg' ? ` (KVM: ${q.accelerators.kvm.reason})` : ''}`;
    return { available: true, detail, ...version, accelerator: q.chosen };
  },
};
