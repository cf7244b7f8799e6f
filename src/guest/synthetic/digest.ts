/**
 * The guest digest: SHA-256 over a fixed header, then every byte of memory in address order, then
 * every byte of the disk image in block order. Source and destination have the same geometry
 * (checked in BEGIN), so equal contents give equal digests. Meaningful only while the workload is
 * paused (or not started); hashing yields to the event loop between chunks so the control socket
 * stays responsive.
 */
import { createHash } from 'node:crypto';
import type { DiskImage } from './disk.js';
import { BLOCK_SIZE } from './layout.js';
import type { GuestMemory } from './memory.js';

const CHUNK_BYTES = 64 << 20;

export const DIGEST_ALGORITHM = 'sha256-ferry-guest-v1';

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export async function guestDigest(memory: GuestMemory, disk: DiskImage | null): Promise<string> {
  const hash = createHash('sha256');
  const header = Buffer.alloc(32);
  header.write('ferry-guest-v1', 0, 'ascii');
  header.writeBigUInt64LE(BigInt(memory.bytes), 16);
  header.writeBigUInt64LE(BigInt(disk?.bytes ?? 0), 24);
  hash.update(header);
  for (const slot of memory.slots) {
    for (let off = 0; off < slot.length; off += CHUNK_BYTES) {
      hash.update(slot.subarray(off, Math.min(off + CHUNK_BYTES, slot.length)));
      await yieldToLoop();
    }
  }
  if (disk) {
    const buf = Buffer.allocUnsafe(16 * BLOCK_SIZE);
    for (let block = 0; block < disk.blockCount; block += 16) {
      hash.update(disk.readBlocks(block, Math.min(16, disk.blockCount - block), buf));
      if (block % 1024 === 0) await yieldToLoop();
    }
  }
  return hash.digest('hex');
}
