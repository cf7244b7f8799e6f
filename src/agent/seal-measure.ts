/**
 * The agent's own seal speed, for `ferry probe`: 1 MiB frames sealed one after another under a
 * throwaway key for about 200 ms. Bounded in time and memory (two 1 MiB buffers), and one
 * measurement at a time per agent, so probes cannot pile up load on a host that is migrating.
 */
import { randomBytes } from 'node:crypto';
import type { Backend } from '../crypto/index.js';
import type { SealMeasurement } from '../control/protocol.js';

const FRAME_BYTES = 1 << 20;
const DURATION_MS = 200;

let running: Promise<SealMeasurement> | null = null;

async function measure(backend: Backend): Promise<SealMeasurement> {
  const throwaway = randomBytes(32);
  const key = await backend.importKey(throwaway);
  throwaway.fill(0);
  const frame = randomBytes(FRAME_BYTES);
  const output = Buffer.allocUnsafe(FRAME_BYTES + 16);
  const iv = Buffer.alloc(12);
  const aad = Buffer.alloc(24);
  try {
    await key.seal(iv, aad, frame, output); // warm-up: first-call costs are not seal speed
    let bytes = 0;
    let counter = 0;
    const start = performance.now();
    while (performance.now() - start < DURATION_MS) {
      iv.writeUInt32BE(++counter, 8); // a fresh IV per frame, as the channel does
      await key.seal(iv, aad, frame, output);
      bytes += FRAME_BYTES;
    }
    const ms = performance.now() - start;
    return { backend: backend.name, frameBytes: FRAME_BYTES, bytes, ms: Math.round(ms), sealGBps: Number((bytes / ms / 1e6).toFixed(2)) };
  } finally {
    key.destroy();
  }
}

export function measureSeal(backend: Backend): Promise<SealMeasurement> {
  running ??= measure(backend).finally(() => (running = null));
  return running;
}
