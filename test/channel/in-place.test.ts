/**
 * Opening in place (ChannelOptions.placePayload) over real loopback sockets, in every backend:
 * messages land where the consumer chose, unplaced ones as usual, the window keeps flowing when
 * the delivered payloads are short; and a tampered message that was placed — in its payload, or in
 * the very bytes peeked to place it — fails the channel with ERR_FERRY_AUTH, is never delivered,
 * and leaves nothing of its plaintext where it was placed.
 */
import assert from 'node:assert/strict';
import { FerryError } from '../../src/errors.js';
import { connectChannel, listenChannel, type Channel, type PlacePayload } from '../../src/channel/index.js';
import { FrameType, HEADER_BYTES, MIN_WINDOW_BYTES } from '../../src/channel/wire.js';
import type { Backend } from '../../src/crypto/backend.js';
import { forEachBackend } from '../support/backends.js';
import { makeSpec, payloadFor } from '../support/channel.js';
import { flipBit, TamperRelay, type Tamper } from '../support/tamper-relay.js';

const SIZE = 256 * 1024;
const COUNT = 48; // 12 MiB: more than the 8 MiB window, so acknowledgements must flow
/** Messages of this type are left to the channel (placePayload says null). */
const UNPLACED_TYPE = 7;
const FAST = {
  stallTimeoutMs: 1000,
  keepaliveMs: 200,
  handshakeTimeoutMs: 500,
  connectTimeoutMs: 300,
  reconnectTimeoutMs: 800,
  connectRounds: 1,
};

/** Message i's bytes go to memory[i * SIZE ...], its first 16 bytes to a buffer of their own (delivered). */
function placer(memory: Uint8Array, peeked: number[]): PlacePayload {
  return async (type, length, peek) => {
    if (type === UNPLACED_TYPE) return null;
    const i = Buffer.from(await peek(0, 4)).readUInt32BE(0); // payloadFor puts the index first
    peeked.push(i);
    if (i >= COUNT || length !== SIZE) return null;
    const head = Buffer.alloc(16);
    return { segments: [head, memory.subarray(i * SIZE + 16, (i + 1) * SIZE)], payload: head };
  };
}

async function transfer(
  backend: Backend,
  memory: Uint8Array,
  peeked: number[],
  tamper?: Tamper,
): Promise<{ delivered: { type: number; payload: Uint8Array; placed?: true }[]; error: FerryError | null }> {
  const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 2 });
  const options = { backend, windowBytes: MIN_WINDOW_BYTES, ...FAST };
  const l = await listenChannel(spec, { ...options, placePayload: placer(memory, peeked) });
  let relay: TamperRelay | null = null;
  let target = l.networks;
  if (tamper) {
    const [host, port] = l.networks[0]!.split(':');
    relay = await new TamperRelay({ host: host!, port: Number(port) }, tamper).start();
    target = [relay.address];
  }
  let src: Channel | null = null;
  try {
    src = await connectChannel({ ...spec, networks: target }, options);
    const s = src;
    const sending = (async () => {
      for (let i = 0; i < COUNT; i++) await s.send(i % 3 === 2 ? UNPLACED_TYPE : 1, payloadFor(i, SIZE));
      await s.end();
    })().catch(() => {});
    const delivered: { type: number; payload: Uint8Array; placed?: true }[] = [];
    let error: FerryError | null = null;
    try {
      for (let m = await l.channel.receive(); m !== null; m = await l.channel.receive()) delivered.push(m);
      await l.channel.end();
    } catch (err) {
      error = err as FerryError;
    }
    await sending;
    return { delivered, error };
  } finally {
    src?.close();
    relay?.cut();
    await l.close();
  }
}

forEachBackend('opening in place', (backend) => {
  it('puts each message where the consumer chose, delivers the rest as usual, and the window keeps flowing', async () => {
    const memory = new Uint8Array(new SharedArrayBuffer(COUNT * SIZE));
    const peeked: number[] = [];
    const { delivered, error } = await transfer(backend(), memory, peeked);
    assert.equal(error, null, error?.message);
    assert.equal(delivered.length, COUNT);
    delivered.forEach((m, i) => {
      const expected = payloadFor(i, SIZE);
      if (i % 3 === 2) {
        assert.equal(m.placed, undefined, `message ${i} was not to be placed`);
        assert.ok(Buffer.from(m.payload).equals(expected), `message ${i} delivered as usual`);
        assert.ok(
          memory.subarray(i * SIZE, (i + 1) * SIZE).every((b) => b === 0),
          `nothing of message ${i} in memory`,
        );
      } else {
        assert.equal(m.placed, true, `message ${i} placed`);
        assert.ok(Buffer.from(m.payload).equals(expected.subarray(0, 16)), `message ${i}: its head delivered`);
        assert.ok(Buffer.from(memory.subarray(i * SIZE + 16, (i + 1) * SIZE)).equals(expected.subarray(16)), `message ${i} in place`);
      }
    });
    assert.deepEqual(
      peeked.sort((a, b) => a - b),
      [...Array(COUNT).keys()].filter((i) => i % 3 !== 2),
      'each placed message peeked once',
    );
  });

  for (const [what, offset] of [
    ['its payload', SIZE / 2],
    ["the bytes peeked to place it (sending it to another message's place)", 3],
  ] as const) {
    it(`a placed message with one bit of ${what} flipped: ERR_FERRY_AUTH, never delivered, its place wiped`, async () => {
      const memory = new Uint8Array(new SharedArrayBuffer(COUNT * SIZE));
      const peeked: number[] = [];
      // The first message from 3 on that gets placed (type 1: numbers 3, 6, ...), on whichever
      // connection it travels. Its index byte flipped names message number + 1, placed as well.
      let victim = -1;
      const tamper: Tamper = (f) => {
        const n = f.header.messageNumber;
        if (victim >= 0 || f.header.type !== FrameType.DATA || n < 3 || n % 3 !== 0) return [f.bytes];
        victim = n;
        return [flipBit(f.bytes, HEADER_BYTES + offset, 0)];
      };
      const { delivered, error } = await transfer(backend(), memory, peeked, tamper);
      assert.ok(error instanceof FerryError, 'the channel failed');
      assert.equal(error.code, 'ERR_FERRY_AUTH', error.message);
      assert.ok(victim >= 3, 'a message was tampered with');
      assert.ok(delivered.length <= victim, `delivered ${delivered.length} messages; message ${victim} must not be among them`);
      if (offset === 3) assert.ok(peeked.includes(victim ^ 1), `the flipped index ${victim ^ 1} was peeked: the forger chose the place`);
      // Whatever the tampered message was opened into holds nothing now.
      const place = offset === 3 ? victim ^ 1 : victim;
      if (place < COUNT && place >= delivered.length) {
        assert.ok(
          memory.subarray(place * SIZE + 16, (place + 1) * SIZE).every((b) => b === 0),
          `place ${place} wiped`,
        );
      }
    });
  }
});
