/** The channel over real loopback sockets: transfer, ordering, both directions, limits, abort. */
import assert from 'node:assert/strict';
import { FerryError } from '../../src/errors.js';
import { connectChannel, listenChannel, type Channel, type ChannelListener } from '../../src/channel/index.js';
import { nativeUnavailableReason, pageCopier } from '../../src/crypto/index.js';
import { forEachBackend } from '../support/backends.js';
import { makeSpec, payloadFor, receiveAll, sendAll } from '../support/channel.js';
import { sleep } from '../../src/common/async.js';

async function pair(spec: ReturnType<typeof makeSpec>, options = {}): Promise<{ l: ChannelListener; src: Channel }> {
  const l = await listenChannel(spec, options);
  const src = await connectChannel({ ...spec, networks: l.networks }, options);
  return { l, src };
}

async function rejects(p: Promise<unknown>, code: string): Promise<FerryError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof FerryError, `expected a FerryError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

forEachBackend('channel transfer', (backend) => {
  for (const mode of ['encrypted', 'plain'] as const) {
    for (const streams of [1, 4]) {
      it(`${mode}, ${streams} stream(s): every message once, in order, byte for byte`, async () => {
        const spec = makeSpec(mode, ['127.0.0.1:0'], { streams });
        const { l, src } = await pair(spec, { backend: backend() });
        try {
          const [digest, got] = await Promise.all([
            sendAll(src, 300, 40_000),
            receiveAll(l.channel, 40_000).then(async (r) => (await l.channel.end(), r)),
          ]);
          assert.equal(got.count, 300);
          assert.equal(got.outOfOrder, 0);
          assert.equal(got.digest, digest);
          assert.equal(src.stats.connectionsOpened, streams);
          assert.equal(l.channel.stats.messagesReceived, 300);
          assert.equal(src.error, null);
        } finally {
          await l.close();
        }
      });
    }
  }
});

forEachBackend('channel batching', (backend) => {
  for (const mode of ['encrypted', 'plain'] as const)
    it(`${mode}: 100 sends in flight at once are sealed in batches and still arrive in order, into the consumer’s memory`, async () => {
      const spec = makeSpec(mode, ['127.0.0.1:0'], { streams: 3 });
      const given = new Set<Uint8Array>();
      const allocatePayload = (_type: number, length: number): Uint8Array => {
        const b = new Uint8Array(length);
        given.add(b);
        return b;
      };
      const l = await listenChannel(spec, { backend: backend(), allocatePayload });
      try {
        const src = await connectChannel({ ...spec, networks: l.networks }, { backend: backend() });
        const sends = Array.from({ length: 100 }, (_, i) => src.send(i % 256, payloadFor(i, 20_000 + i)));
        for (let i = 0; i < 100; i++) {
          const m = await l.channel.receive();
          assert.ok(m && given.has(m.payload), 'opened straight into memory the consumer supplied');
          assert.equal(m.type, i % 256);
          assert.ok(Buffer.from(m.payload).equals(payloadFor(i, 20_000 + i)), `message ${i}`);
        }
        await Promise.all(sends);
        await Promise.all([src.end(), l.channel.receive().then(async (m) => (assert.equal(m, null), l.channel.end()))]);
      } finally {
        await l.close();
      }
    });

  // Plain twice: copied into frames on the calling thread, and on the pool with the addon's copyBatch.
  const variants = [
    { mode: 'encrypted', onPool: false, label: 'encrypted' },
    { mode: 'plain', onPool: false, label: 'plain' },
    { mode: 'plain', onPool: true, label: 'plain, copied on the pool' },
  ] as const;
  for (const { mode, onPool, label } of variants)
    it(`${label}: a message sent as segments (some in shared memory) arrives as one, byte for byte`, async function () {
      const copy = onPool ? pageCopier() : null;
      if (onPool && copy === null) {
        console.log(`      skipped: no copyBatch without the addon: ${nativeUnavailableReason()}`);
        this.skip();
      }
      const spec = makeSpec(mode, ['127.0.0.1:0'], { streams: 2 });
      const l = await listenChannel(spec, { backend: backend() });
      let src: Channel | undefined;
      try {
        const sender = await connectChannel({ ...spec, networks: l.networks }, { backend: backend(), copy });
        src = sender;
        const shared = new Uint8Array(new SharedArrayBuffer(300_000));
        for (let i = 0; i < shared.length; i++) shared[i] = (i * 7) & 0xff;
        const messages = Array.from({ length: 40 }, (_, i) => [
          Buffer.from(`header ${i}`),
          shared.subarray(i * 1000, i * 1000 + 150_000 + i),
          Buffer.alloc(0),
          payloadFor(i, 16 + i * 100),
        ]);
        const sends = messages.map((parts, i) => sender.send(i, parts));
        for (let i = 0; i < messages.length; i++) {
          const m = await l.channel.receive();
          assert.equal(m!.type, i);
          assert.ok(Buffer.from(m!.payload).equals(Buffer.concat(messages[i]!)), `message ${i}`);
        }
        await Promise.all(sends);
        await rejects(src.send(1, [Buffer.alloc(1), 'text' as unknown as Uint8Array]), 'ERR_FERRY_INPUT');
        await rejects(src.send(1, [Buffer.alloc(3 * 1024 * 1024), Buffer.alloc(1024 * 1024 + 1)]), 'ERR_FERRY_INPUT');
        assert.equal(src.error, null);
        await Promise.all([src.end(), l.channel.receive().then(async (m) => (assert.equal(m, null), l.channel.end()))]);
      } finally {
        src?.close();
        await l.close();
      }
    });
});

describe('channel behaviour', () => {
  let l: ChannelListener | undefined;
  afterEach(async () => {
    await l?.close();
    l = undefined;
  });

  it('carries messages both ways at once (the destination answers)', async () => {
    const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 3 });
    const p = await pair(spec);
    l = p.l;
    const dst = l.channel;
    const echo = (async () => {
      let n = 0;
      for (let m = await dst.receive(); m; m = await dst.receive()) {
        await dst.send(7, Buffer.from(`ack ${n++} ${m.payload.length}`));
      }
      await dst.end();
      return n;
    })();
    const replies: string[] = [];
    const reader = (async () => {
      for (let m = await p.src.receive(); m; m = await p.src.receive()) replies.push(Buffer.from(m.payload).toString());
    })();
    for (let i = 0; i < 50; i++) await p.src.send(1, payloadFor(i, 1000 + i));
    await p.src.end();
    assert.equal(await echo, 50);
    await reader;
    assert.deepEqual(
      replies,
      Array.from({ length: 50 }, (_, i) => `ack ${i} ${1000 + i}`),
    );
  });

  it('send waits while the window is full and resumes as the consumer takes messages', async () => {
    const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 1 });
    const window = 8 * 1024 * 1024;
    const p = await pair(spec, { windowBytes: window });
    l = p.l;
    const size = 1024 * 1024;
    let sent = 0;
    const sending = (async () => {
      for (let i = 0; i < 20; i++) {
        await p.src.send(i % 256, payloadFor(i, size));
        sent++;
      }
      await p.src.end();
    })();
    await sleep(300);
    // Nobody receives yet: the sender must stop at the window (one message may overshoot).
    assert.ok(sent <= window / size + 1, `sent ${sent} MiB into an ${window / size} MiB window`);
    const got = await receiveAll(l.channel, size);
    await l.channel.end();
    await sending;
    assert.equal(got.count, 20);
    assert.equal(got.outOfOrder, 0);
  });

  it('refuses a message larger than the maximum frame, and bad types, without failing', async () => {
    const p = await pair(makeSpec('encrypted', ['127.0.0.1:0']));
    l = p.l;
    await rejects(p.src.send(1, Buffer.alloc(4 * 1024 * 1024 + 1)), 'ERR_FERRY_INPUT');
    await rejects(p.src.send(256, Buffer.alloc(1)), 'ERR_FERRY_INPUT');
    assert.equal(p.src.error, null);
    await p.src.send(1, Buffer.from('still fine'));
    const m = await l.channel.receive();
    assert.equal(Buffer.from(m!.payload).toString(), 'still fine');
    p.src.close();
  });

  it('rejects bad specs with ERR_FERRY_INPUT', async () => {
    const good = makeSpec('encrypted', ['127.0.0.1:1']);
    await rejects(connectChannel({ ...good, key: Buffer.alloc(16) }), 'ERR_FERRY_INPUT');
    await rejects(connectChannel({ ...good, nonce: Buffer.alloc(12) }), 'ERR_FERRY_INPUT');
    await rejects(connectChannel({ ...good, streams: 0 }), 'ERR_FERRY_INPUT');
    await rejects(connectChannel({ ...good, migrationId: 'a b' }), 'ERR_FERRY_INPUT');
    await rejects(connectChannel({ ...good, networks: ['nohost'] }), 'ERR_FERRY_INPUT');
  });

  it('moves to a new key epoch at the per-key budget instead of stopping; a budget out of range is refused', async () => {
    const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 1 });
    await rejects(listenChannel(spec, { keyBudgetBytes: 1_000_000 }), 'ERR_FERRY_INPUT');
    await rejects(connectChannel({ ...spec, networks: ['127.0.0.1:1'] }, { keyBudgetBytes: 2 ** 40 }), 'ERR_FERRY_INPUT');
    const p = await pair(spec, { keyBudgetBytes: 4 * 1024 * 1024 });
    l = p.l;
    const [digest, got] = await Promise.all([
      sendAll(p.src, 100, 100_000),
      receiveAll(l.channel, 100_000).then(async (r) => (await l!.channel.end(), r)),
    ]);
    assert.equal(got.digest, digest);
    assert.equal(p.src.stats.keyEpochSent, 2, '10 MB at 4 MiB an epoch: epochs 0, 1 and 2');
    assert.equal(l.channel.stats.keyEpochReceived, 2);
  });

  it('abort() reaches the peer as ERR_FERRY_ABORTED; both stay failed', async () => {
    const p = await pair(makeSpec('encrypted', ['127.0.0.1:0']));
    l = p.l;
    await p.src.send(1, Buffer.from('hello'));
    assert.equal(Buffer.from((await l.channel.receive())!.payload).toString(), 'hello');
    p.src.abort(new FerryError('ERR_FERRY_ABORTED', 'the guest stopped'));
    const err = await rejects(l.channel.receive(), 'ERR_FERRY_ABORTED');
    assert.match(err.message, /the guest stopped/);
    await rejects(p.src.send(1, Buffer.alloc(1)), 'ERR_FERRY_ABORTED');
    await rejects(l.channel.send(1, Buffer.alloc(1)), 'ERR_FERRY_ABORTED');
  });

  it('fails with ERR_FERRY_NETWORK when no network answers', async () => {
    const spec = makeSpec('encrypted', ['127.0.0.1:1', '127.0.0.1:2']);
    await rejects(connectChannel(spec, { connectTimeoutMs: 500 }), 'ERR_FERRY_NETWORK');
  });
});
