/** Specs, payloads and a transfer loop shared by the channel suites. */
import { createHash, randomBytes } from 'node:crypto';
import type { Channel, ChannelMode, ChannelSpec } from '../../src/channel/index.js';

let counter = 0;

export function makeSpec(mode: ChannelMode, networks: string[], extra: Partial<ChannelSpec> = {}): ChannelSpec {
  return {
    migrationId: `test-${process.pid}-${++counter}`,
    key: randomBytes(32),
    nonce: randomBytes(8),
    mode,
    streams: 2,
    networks,
    ...extra,
  };
}

/** A deterministic payload for message i, so the receiver can check each one. */
export function payloadFor(i: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  const seed = createHash('sha256').update(`msg-${i}`).digest();
  for (let off = 0; off < size; off += 32) seed.copy(b, off, 0, Math.min(32, size - off));
  b.writeUInt32BE(i >>> 0, 0);
  return b;
}

export interface Received {
  count: number;
  digest: string;
  outOfOrder: number;
  bytes: number;
}

/** Receives until END; checks every message is the next one, byte for byte. */
export async function receiveAll(ch: Channel, size: number, onMessage?: (i: number) => void): Promise<Received> {
  const hash = createHash('sha256');
  let count = 0;
  let outOfOrder = 0;
  let bytes = 0;
  for (;;) {
    const m = await ch.receive();
    if (m === null) break;
    if (m.type !== count % 256 || !Buffer.from(m.payload).equals(payloadFor(count, size))) outOfOrder++;
    hash.update(m.payload);
    bytes += m.payload.length;
    onMessage?.(count);
    count++;
  }
  return { count, digest: hash.digest('hex'), outOfOrder, bytes };
}

export async function sendAll(ch: Channel, n: number, size: number, onSent?: (i: number) => void): Promise<string> {
  const hash = createHash('sha256');
  for (let i = 0; i < n; i++) {
    const p = payloadFor(i, size);
    hash.update(p);
    await ch.send(i % 256, p);
    onSent?.(i);
  }
  await ch.end();
  return hash.digest('hex');
}
