/**
 * Every way a man in the middle can touch the stream is caught: the destination fails with the
 * right code, and the consumer never sees a corrupted, repeated or out-of-order message, nor an END
 * that was not sent.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { FerryError } from '../../src/errors.js';
import {
  connectChannel,
  createIncomingChannel,
  listenChannel,
  type Channel,
  type ChannelListener,
  type ChannelOptions,
} from '../../src/channel/index.js';
import { FrameType, HEADER_BYTES, IV_BYTES, rewriteConnection, writeIv } from '../../src/channel/wire.js';
import { deriveEpochKey, loadBackend } from '../../src/crypto/index.js';
import { flipBit, TamperRelay, type SeenFrame, type Tamper } from '../support/tamper-relay.js';
import { makeSpec, payloadFor } from '../support/channel.js';

const COUNT = 20;
const SIZE = 10_000;
const FAST = {
  stallTimeoutMs: 1000,
  keepaliveMs: 200,
  handshakeTimeoutMs: 500,
  connectTimeoutMs: 300,
  reconnectTimeoutMs: 800,
  connectRounds: 1,
};

interface Outcome {
  received: number;
  bad: number;
  sawEnd: boolean;
  error: FerryError | null;
  source: Channel;
}

const isData = (f: SeenFrame): boolean => f.header.type === FrameType.DATA;

/** Runs a transfer through a tampering relay and reports what the destination's consumer saw. */
async function transfer(
  tamper: Tamper,
  opts: { streams?: number; spec?: ReturnType<typeof makeSpec>; options?: ChannelOptions; count?: number; size?: number } = {},
): Promise<Outcome & { relay: TamperRelay }> {
  const spec = opts.spec ?? makeSpec('encrypted', ['127.0.0.1:0'], { streams: opts.streams ?? 1 });
  const { count = COUNT, size = SIZE } = opts;
  const options = { ...FAST, ...opts.options };
  const l = await listenChannel(spec, options);
  const [host, port] = l.networks[0]!.split(':');
  const relay = await new TamperRelay({ host: host!, port: Number(port) }, tamper).start();
  let source: Channel | undefined;
  try {
    source = await connectChannel({ ...spec, networks: [relay.address] }, options);
    const src = source;
    const sending = (async () => {
      for (let i = 0; i < count; i++) await src.send(i % 256, payloadFor(i, size));
      await src.end();
    })().catch(() => {});
    let received = 0;
    let bad = 0;
    let sawEnd = false;
    let error: FerryError | null = null;
    try {
      for (;;) {
        const m = await l.channel.receive();
        if (m === null) {
          sawEnd = true;
          break;
        }
        if (m.type !== received % 256 || !Buffer.from(m.payload).equals(payloadFor(received, size))) bad++;
        received++;
      }
      await l.channel.end();
    } catch (err) {
      error = err as FerryError;
    }
    await sending;
    return { received, bad, sawEnd, error, source: src, relay };
  } finally {
    source?.close();
    relay.cut();
    await l.close();
  }
}

function expectCaught(o: Outcome, code: string, count = COUNT): void {
  assert.ok(o.error, `the destination should have failed with ${code}; it received ${o.received} and END=${o.sawEnd}`);
  assert.ok(o.error instanceof FerryError);
  assert.equal(o.error.code, code, o.error.message);
  assert.equal(o.bad, 0, 'no corrupted or out-of-order payload reached the consumer');
  assert.ok(o.received < count, 'the transfer did not complete');
  assert.equal(o.sawEnd, false);
  // The source is told why, at once: not left to redial a destination that gave up.
  assert.equal(o.source.error?.code, 'ERR_FERRY_ABORTED', o.source.error?.message);
  assert.match(o.source.error!.message, new RegExp(`^the peer aborted the channel: ${code}: `));
}

/** Applies `change` to the first DATA frame with index `at` on connection 0, passes the rest. */
function onFrame(at: number, change: (f: SeenFrame, relay: TamperRelay) => Buffer[] | 'truncate'): Tamper {
  return (f, relay) => (f.conn === 0 && f.index === at ? change(f, relay) : [f.bytes]);
}

describe('tampering between source and destination', function () {
  this.timeout(20_000);

  it('a clean relay changes nothing (the harness itself)', async () => {
    const o = await transfer((f) => [f.bytes]);
    assert.equal(o.error, null);
    assert.equal(o.received, COUNT);
    assert.equal(o.sawEnd, true);
    assert.equal(o.bad, 0);
  });

  it('one bit of the header flipped (the message number, inside the AAD): ERR_FERRY_AUTH', async () => {
    expectCaught(await transfer(onFrame(3, (f) => [flipBit(f.bytes, 23)])), 'ERR_FERRY_AUTH');
  });

  it('one bit of the header flipped (the message type): ERR_FERRY_AUTH', async () => {
    expectCaught(await transfer(onFrame(3, (f) => [flipBit(f.bytes, 3, 5)])), 'ERR_FERRY_AUTH');
  });

  it('one bit of the sequence number flipped: ERR_FERRY_SEQUENCE', async () => {
    expectCaught(await transfer(onFrame(3, (f) => [flipBit(f.bytes, 15)])), 'ERR_FERRY_SEQUENCE');
  });

  it('one bit of the payload flipped: ERR_FERRY_AUTH', async () => {
    expectCaught(await transfer(onFrame(3, (f) => [flipBit(f.bytes, HEADER_BYTES + 500, 3)])), 'ERR_FERRY_AUTH');
  });

  it('one bit of the tag flipped: ERR_FERRY_AUTH', async () => {
    expectCaught(await transfer(onFrame(3, (f) => [flipBit(f.bytes, f.bytes.length - 1, 7)])), 'ERR_FERRY_AUTH');
  });

  it('the failed frame is named, wherever it sits in the batch it was opened in', async () => {
    // Frames 1-6 go in one write, so they are read, and opened, together; frame 4 is tampered.
    const held: Buffer[] = [];
    const o = await transfer((f) => {
      if (f.conn !== 0 || f.index < 1 || f.index > 6) return [f.bytes];
      held.push(f.index === 4 ? flipBit(f.bytes, HEADER_BYTES + 500, 3) : f.bytes);
      return f.index === 6 ? [Buffer.concat(held)] : [];
    });
    expectCaught(o, 'ERR_FERRY_AUTH');
    assert.match(o.error!.message, /: DATA sequence 4 on connection 1 \(tampered/);
  });

  it('a frame replayed on the same connection: ERR_FERRY_SEQUENCE', async () => {
    expectCaught(await transfer(onFrame(3, (f) => [f.bytes, f.bytes])), 'ERR_FERRY_SEQUENCE');
  });

  it('a frame replayed on another connection of the same channel: ERR_FERRY_SEQUENCE', async () => {
    // Hold connection 0's data until connection 1 is up, then copy one of its frames onto connection 1.
    const held: Buffer[] = [];
    const o = await transfer(
      (f, relay) => {
        if (f.conn === 0 && f.index >= 1) {
          held.push(f.bytes);
          return [];
        }
        if (f.conn === 1 && f.index === 0) {
          setTimeout(() => {
            for (const b of held) relay.inject(0, b);
            relay.inject(
              1,
              held.find((b) => b[1] === FrameType.DATA)!,
            );
          }, 50);
        }
        return [f.bytes];
      },
      { streams: 2 },
    );
    expectCaught(o, 'ERR_FERRY_SEQUENCE');
    assert.match(o.error!.message, /arrived on connection/);
  });

  it('a frame from another migration, at the right connection and sequence: ERR_FERRY_AUTH', async () => {
    // Record migration B (same connection id 1 and sequence numbers, another key).
    const b = await transfer((f) => [f.bytes]);
    const foreign = b.relay.frames.find((f) => f.conn === 0 && f.index === 3)!;
    assert.ok(isData(foreign));
    expectCaught(await transfer(onFrame(3, () => [foreign.bytes])), 'ERR_FERRY_AUTH');
  });

  it('two frames swapped: ERR_FERRY_SEQUENCE', async () => {
    let held: Buffer | null = null;
    const o = await transfer((f) => {
      if (f.conn !== 0) return [f.bytes];
      if (f.index === 3) {
        held = f.bytes;
        return [];
      }
      if (f.index === 4 && held) return [f.bytes, held];
      return [f.bytes];
    });
    expectCaught(o, 'ERR_FERRY_SEQUENCE');
  });

  it('a frame dropped: ERR_FERRY_SEQUENCE', async () => {
    expectCaught(await transfer(onFrame(3, () => [])), 'ERR_FERRY_SEQUENCE');
  });

  it('a forged frame injected at the next sequence number: ERR_FERRY_AUTH', async () => {
    const o = await transfer(
      onFrame(3, (f) => {
        const forged = Buffer.from(f.bytes);
        randomBytes(forged.length - HEADER_BYTES).copy(forged, HEADER_BYTES);
        return [forged];
      }),
    );
    expectCaught(o, 'ERR_FERRY_AUTH');
  });

  it('the stream truncated before END: no END reaches the consumer; ERR_FERRY_NETWORK', async () => {
    const o = await transfer((f) => (f.header.type === FrameType.END ? 'truncate' : [f.bytes]));
    assert.ok(o.error, 'the destination must not take a cut stream for a finished one');
    assert.equal(o.error.code, 'ERR_FERRY_NETWORK');
    assert.equal(o.sawEnd, false);
    assert.equal(o.bad, 0);
    assert.equal(o.received, COUNT, 'every message before the cut arrived');
    assert.equal(o.source.error?.code, 'ERR_FERRY_NETWORK');
  });

  it('a frame cut in the middle: the partial frame never reaches the consumer', async () => {
    const o = await transfer(
      onFrame(5, (f, relay) => {
        relay.inject(0, f.bytes.subarray(0, 3000));
        return 'truncate';
      }),
    );
    assert.equal(o.error?.code, 'ERR_FERRY_NETWORK');
    assert.equal(o.bad, 0);
    assert.equal(o.received, 4);
  });

  it('a connection with a wrong key is refused and the channel goes on untouched', async () => {
    const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 1 });
    const rejected: FerryError[] = [];
    let l: ChannelListener | undefined;
    try {
      l = await listenChannel(spec, { ...FAST, onRejectedConnection: (e) => rejected.push(e) });
      const intruder = connectChannel({ ...spec, key: randomBytes(32), networks: l.networks }, FAST);
      await assert.rejects(intruder, (e: FerryError) => e.code === 'ERR_FERRY_NETWORK' && /HELLO exchange/.test(e.message));
      assert.equal(rejected[0]?.code, 'ERR_FERRY_AUTH');
      assert.ok(l.channel.stats.connectionsRejected >= 1);
      const src = await connectChannel({ ...spec, networks: l.networks }, FAST);
      await src.send(1, Buffer.from('the real one'));
      assert.equal(Buffer.from((await l.channel.receive())!.payload).toString(), 'the real one');
      assert.equal(l.channel.stats.connectionsOpened, 1);
      src.close();
    } finally {
      await l?.close();
    }
  });

  it('a replayed connection (its HELLO recorded and sent again) is refused', async () => {
    const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 1 });
    const rejected: FerryError[] = [];
    const dst = await createIncomingChannel(spec, { ...FAST, onRejectedConnection: (e) => rejected.push(e) });
    // Record a real connection's HELLO through a relay into dst.
    const { createServer, connect } = await import('node:net');
    const server = createServer((s) => dst.adopt(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const relay = await new TamperRelay({ host: '127.0.0.1', port }, (f) => [f.bytes]).start();
    const src = await connectChannel({ ...spec, networks: [relay.address] }, FAST);
    const hello = relay.frames[0]!.bytes;
    const replay = connect({ host: '127.0.0.1', port });
    await new Promise((r) => replay.once('connect', r));
    replay.write(hello);
    await new Promise((r) => replay.once('close', r));
    assert.equal(rejected[0]?.code, 'ERR_FERRY_SEQUENCE');
    assert.match(rejected[0]!.message, /used before/);
    assert.equal(dst.error, null);
    src.close();
    dst.close();
    relay.cut();
    server.close();
  });
});

/**
 * A man in the middle who holds the migration key (a peer with a bug, or one that lies) still
 * cannot move a connection's key epoch other than one step at a KEY_UPDATE: frames are re-sealed
 * here, with the keys the schedule derives, at the right sequence, so only the epoch is wrong.
 */
describe('tampering with key epochs', function () {
  this.timeout(30_000);
  const EPOCHS = { options: { keyBudgetBytes: 4 * 1024 * 1024 }, count: 60, size: 256 * 1024 };
  let spec: ReturnType<typeof makeSpec>;
  beforeEach(() => {
    spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 1 });
  });

  const keyOf = (epoch: number): Buffer => (epoch === 0 ? Buffer.from(spec.key) : deriveEpochKey(spec.key, spec.nonce, 0, epoch));

  /** `f` re-sealed under `epoch`'s key (header changed by `edit`), at its own connection and sequence. */
  async function reseal(f: SeenFrame, epoch: number, edit: (header: Buffer) => void = () => {}): Promise<Buffer> {
    const node = await loadBackend('node');
    const h = f.header;
    const iv = writeIv(Buffer.alloc(IV_BYTES), spec.nonce, h.connectionId, h.sequence);
    const plain = await node.open(keyOf(h.epoch), iv, f.bytes.subarray(0, HEADER_BYTES), f.bytes.subarray(HEADER_BYTES));
    const header = Buffer.from(f.bytes.subarray(0, HEADER_BYTES));
    rewriteConnection(header, h.connectionId, h.sequence, epoch);
    edit(header);
    return Buffer.concat([header, await node.seal(keyOf(epoch), iv, header, plain)]);
  }

  /** Holds frames of connection 0 back until `pick` (given the frame and the one before it) answers what to send instead. */
  function atFrame(pick: (f: SeenFrame, before: SeenFrame | undefined) => Promise<Buffer[]> | null): Tamper {
    let before: SeenFrame | undefined;
    let chain: Promise<unknown> = Promise.resolve();
    let done = false;
    return (f, relay) => {
      const prev = before;
      before = f;
      const out = done || f.conn !== 0 ? null : pick(f, prev);
      if (out) done = true;
      // Later frames wait behind an async re-seal so the order on the wire stays.
      const send = out ?? Promise.resolve([f.bytes]);
      chain = chain.then(() => send).then((bufs) => bufs.forEach((b) => relay.inject(f.conn, b)));
      return [];
    };
  }

  const isKeyUpdate = (f: SeenFrame, epoch: number): boolean => f.header.type === FrameType.KEY_UPDATE && f.header.epoch === epoch;

  it('a clean relay sees each epoch begin with a KEY_UPDATE, and the transfer completes (the harness itself)', async () => {
    const o = await transfer(
      atFrame(() => null),
      { spec, ...EPOCHS },
    );
    assert.equal(o.error, null);
    assert.equal(o.received, EPOCHS.count);
    const updates = o.relay.frames.filter((f) => f.header.type === FrameType.KEY_UPDATE).map((f) => f.header.epoch);
    assert.deepEqual(updates, [1, 2, 3], '15 MiB at 4 MiB an epoch');
    assert.ok(
      o.relay.frames.every((f) => (f.header.epoch === 0) === (f.bytes[0] === 1)),
      'version 1 for epoch 0, 2 after',
    );
  });

  it('a frame of an old epoch, after the connection moved on (re-sealed under its key): ERR_FERRY_SEQUENCE', async () => {
    const o = await transfer(
      atFrame((f, before) => (before && isKeyUpdate(before, 2) && f.header.type === FrameType.DATA ? reseal(f, 1).then((b) => [b]) : null)),
      { spec, ...EPOCHS },
    );
    expectCaught(o, 'ERR_FERRY_SEQUENCE', EPOCHS.count);
    assert.match(o.error!.message, /old epoch/);
  });

  it('a frame of an old epoch replayed as it was recorded: ERR_FERRY_SEQUENCE', async () => {
    let recorded: Buffer | undefined;
    const o = await transfer(
      atFrame((f) => {
        if (f.header.epoch === 1 && f.header.type === FrameType.DATA) recorded ??= f.bytes;
        return isKeyUpdate(f, 2) ? Promise.resolve([f.bytes, recorded!]) : null;
      }),
      { spec, ...EPOCHS },
    );
    expectCaught(o, 'ERR_FERRY_SEQUENCE', EPOCHS.count);
  });

  it('a KEY_UPDATE that skips an epoch (1 to 3): ERR_FERRY_SEQUENCE', async () => {
    const o = await transfer(
      atFrame((f) => (isKeyUpdate(f, 2) ? reseal(f, 3).then((b) => [b]) : null)),
      { spec, ...EPOCHS },
    );
    expectCaught(o, 'ERR_FERRY_SEQUENCE', EPOCHS.count);
    assert.match(o.error!.message, /skipped epoch/);
  });

  it('a frame sealed under the next epoch without a KEY_UPDATE before it: ERR_FERRY_SEQUENCE', async () => {
    const o = await transfer(
      atFrame((f) => (f.header.epoch === 1 && f.header.type === FrameType.DATA ? reseal(f, 2).then((b) => [b]) : null)),
      { spec, ...EPOCHS },
    );
    expectCaught(o, 'ERR_FERRY_SEQUENCE', EPOCHS.count);
    assert.match(o.error!.message, /skipped epoch/);
  });

  it('a KEY_UPDATE with one bit of its tag flipped: ERR_FERRY_AUTH', async () => {
    const o = await transfer(
      atFrame((f) => (isKeyUpdate(f, 1) ? Promise.resolve([flipBit(f.bytes, f.bytes.length - 1)]) : null)),
      { spec, ...EPOCHS },
    );
    expectCaught(o, 'ERR_FERRY_AUTH', EPOCHS.count);
  });

  it('a KEY_UPDATE that names a message number (sealed right, but malformed): ERR_FERRY_FRAME', async () => {
    const o = await transfer(
      atFrame((f) => (isKeyUpdate(f, 1) ? reseal(f, 1, (h) => (h[23] = 1)).then((b) => [b]) : null)),
      { spec, ...EPOCHS },
    );
    expectCaught(o, 'ERR_FERRY_FRAME', EPOCHS.count);
  });

  it('a truncated KEY_UPDATE (its last byte gone, the stream going on): refused, the channel fails', async () => {
    const o = await transfer(
      atFrame((f) => (isKeyUpdate(f, 1) ? Promise.resolve([f.bytes.subarray(0, f.bytes.length - 1)]) : null)),
      { spec, ...EPOCHS },
    );
    // The receiver reads the next frame's first byte as the update's tag: the tag fails, or the
    // next header (now a byte off) is malformed, whichever check the bytes reach first.
    assert.ok(o.error && ['ERR_FERRY_AUTH', 'ERR_FERRY_FRAME'].includes(o.error.code), String(o.error));
    expectCaught(o, o.error.code, EPOCHS.count);
  });
});
