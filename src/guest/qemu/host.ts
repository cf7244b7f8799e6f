/** This host's QEMU, probed once per process (a few seconds: it runs a tiny guest under each accelerator). */
import { DEFAULT_MACHINE } from './config.js';
import { probeQemu, type QemuProbe } from './probe.js';

let probed: Promise<QemuProbe> | null = null;

export function hostQemu(): Promise<QemuProbe> {
  probed ??= probeQemu({ machineTypes: [DEFAULT_MACHINE] });
  return probed;
}
