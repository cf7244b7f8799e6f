/**
 * Facts about this machine that the agent advertises in its capabilities: memory and the CPU
 * features that matter for AES-GCM. (What QEMU can do here is the qemu driver's availability.)
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { cpuFeatures as addonCpuFeatures } from '../crypto/index.js';

const AES_FEATURES = ['aes', 'pclmulqdq', 'avx2', 'vaes', 'vpclmulqdq', 'avx512f'];

/** The AES-GCM-relevant CPU features, as the native addon probed them, else from /proc/cpuinfo. */
export function cpuFeatures(): string[] {
  const probed = addonCpuFeatures();
  if (probed) return AES_FEATURES.filter((f) => probed[f as keyof typeof probed]);
  try {
    const line =
      readFileSync('/proc/cpuinfo', 'utf8')
        .split('\n')
        .find((l) => /^flags\s*:/.test(l)) ?? '';
    const flags = new Set(
      line
        .replace(/^flags\s*:/, '')
        .trim()
        .split(/\s+/),
    );
    return AES_FEATURES.filter((f) => flags.has(f));
  } catch {
    return [];
  }
}

/** Memory the kernel can give new guests without swapping (MemAvailable), else os.freemem(). */
export function freeMemoryBytes(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux: fall through
  }
  return os.freemem();
}
