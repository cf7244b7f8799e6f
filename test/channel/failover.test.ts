/**
 * Failover between two migration networks on loopback (127.0.0.2 and 127.0.0.3 need no setup on
 * Linux). The first network is a relay in front of the destination that the test cuts, or makes
 * silent, mid-transfer: the transfer must finish over the second with every message exactly once.
 */
import assert from 'node:assert/strict';
import { connectChannel, listenChannel, type ChannelListener } from '../../src/channel/index.js';
import type { ChannelFailover } from '../../src/channel/types.js';
import { startWanEmulator, type WanEmulator } from '../../src/bench/wan-emulator.js';
import { FerryError } from '../../src/errors.js';
import { CuttableRelay } from '../support/relay.js';
import { makeSpec, receiveAll, sendAll } from '../support/channel.js';
import { sleep } from '../../src/common/async.js';

const SIZE = 64 * 1024;
const MiB = 1024 * 1024;
const COUNT = 400; // 25 MiB

describe('failover between migration networks', function () {
  let l: ChannelListener | undefined;
  let relay: WanEmulator | undefined;

  afterEach(async () => {
    await relay?.close();
    await l?.close();
    l = relay = undefined;
  });

  for (const mode of ['encrypted', 'plain'] as const) {
    for (const fault of ['cut', 'blackhole'] as const) {
      it(`${mode}: the first network is ${fault === 'cut' ? 'cut' : 'silenced'} mid-transfer; the rest goes over the second, intact`, async () => {
        const spec = makeSpec(mode, ['127.0.0.2:0', '127.0.0.3:0'], { streams: 2 });
        const options = {
          stallTimeoutMs: 400,
          keepaliveMs: 100,
          handshakeTimeoutMs: 400,
          connectTimeoutMs: 400,
          windowBytes: 8 * 1024 * 1024,
        };
        l = await listenChannel(spec, options);
        relay = await startWanEmulator({ target: l.networks[0]!, listen: '127.0.0.2:0', delayMs: 0 });
        const told: ChannelFailover[] = [];
        const src = await connectChannel(
          { ...spec, networks: [relay.address, l.networks[1]!] },
          { ...options, onFailover: (f) => told.push(f) },
        );
        assert.equal(src.stats.network, relay.address);
        let faulted = false;
        const [digest, got] = await Promise.all([
          sendAll(src, COUNT, SIZE),
          receiveAll(l.channel, SIZE, (i) => {
            if (i === 100 && !faulted) {
              faulted = true;
              if (fault === 'cut') relay!.cut();
              else relay!.blackhole();
            }
          }).then(async (r) => (await l!.channel.end(), r)),
        ]);
        assert.ok(faulted);
        assert.equal(got.count, COUNT, 'no message lost');
        assert.equal(got.outOfOrder, 0, 'none out of order or altered');
        assert.equal(got.digest, digest, 'checksum of the whole transfer');
        assert.equal(l.channel.stats.messagesReceived, COUNT, 'no duplicate reached the consumer');
        assert.ok(src.stats.failovers >= 1, 'moved to another network');
        assert.equal(src.stats.network, l.networks[1]);
        // Told once per move, with what the lost connections had carried unacknowledged.
        assert.equal(told.length, src.stats.failovers);
        assert.deepEqual({ from: told[0]!.from, to: told[0]!.to }, { from: relay.address, to: l.networks[1] });
        assert.ok(told[0]!.bytesResent >= 0 && told[0]!.bytesResent <= options.windowBytes + SIZE, `${told[0]!.bytesResent}`);
        assert.equal(src.stats.bytesAcknowledged, src.stats.bytesSent, 'all acknowledged at the end');
        assert.ok(src.stats.connectionsOpened >= 3, 'reconnects open new connections');
        assert.equal(src.error, null);
      });
    }
  }

  it('encrypted, one network: it goes down for a second mid-transfer; the source waits it out and finishes, intact', async () => {
    const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 2 });
    const options = { handshakeTimeoutMs: 400, connectTimeoutMs: 400, reconnectTimeoutMs: 10_000, windowBytes: 8 * 1024 * 1024 };
    l = await listenChannel(spec, options);
    const [host, port] = l.networks[0]!.split(':');
    const blink = new CuttableRelay({ host: host!, port: Number(port) });
    try {
      const src = await connectChannel({ ...spec, networks: [await blink.listen()] }, options);
      let down = false;
      const [digest, got] = await Promise.all([
        sendAll(src, COUNT, SIZE),
        receiveAll(l.channel, SIZE, (i) => {
          if (i === 100 && !down) {
            down = true;
            blink.partitioned = true;
            blink.cut();
            setTimeout(() => (blink.partitioned = false), 1000);
          }
        }).then(async (r) => (await l!.channel.end(), r)),
      ]);
      assert.ok(down);
      assert.equal(got.count, COUNT, 'no message lost');
      assert.equal(got.outOfOrder, 0, 'none out of order or altered');
      assert.equal(got.digest, digest, 'checksum of the whole transfer');
      assert.equal(l.channel.stats.messagesReceived, COUNT, 'no duplicate reached the consumer');
      assert.ok(src.stats.connectionsOpened >= 3, 'reconnected with new connections');
      assert.equal(src.error, null);
    } finally {
      blink.close();
    }
  });

  it('a source that never got through fails fast: ERR_FERRY_NETWORK after its connect rounds', async () => {
    const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 1 });
    l = await listenChannel(spec, {});
    const [host, port] = l.networks[0]!.split(':');
    const down = new CuttableRelay({ host: host!, port: Number(port) });
    down.partitioned = true;
    try {
      const started = performance.now();
      await assert.rejects(connectChannel({ ...spec, networks: [await down.listen()] }, { reconnectTimeoutMs: 60_000 }), {
        code: 'ERR_FERRY_NETWORK',
      });
      assert.ok(performance.now() - started < 30_000, 'did not wait out the reconnect time before ever connecting');
    } finally {
      down.close();
    }
  });

  it("a cancel while connecting ends it at once with the cancel's reason, not the connect timeouts", async () => {
    const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 2 });
    l = await listenChannel(spec, {});
    const [host, port] = l.networks[0]!.split(':');
    // The destination's HELLO never comes back: without the cancel the source would wait for its
    // handshake timeouts, round after round.
    const mute = new CuttableRelay({ host: host!, port: Number(port) });
    mute.muteReplies = true;
    try {
      const address = await mute.listen();
      const options = { handshakeTimeoutMs: 20_000, connectTimeoutMs: 20_000 };
      const cancel = new AbortController();
      const started = performance.now();
      setTimeout(() => cancel.abort(new FerryError('ERR_FERRY_ABORTED', 'cancelled by the operator')), 300);
      await assert.rejects(connectChannel({ ...spec, networks: [address] }, { ...options, signal: cancel.signal }), {
        code: 'ERR_FERRY_ABORTED',
        message: 'cancelled by the operator',
      });
      const took = performance.now() - started;
      assert.ok(took < 5_000, `took ${took.toFixed(0)} ms`);
      // Aborted before it began: no connection is even tried.
      const before = mute.accepted;
      const gone = new AbortController();
      gone.abort();
      await assert.rejects(connectChannel({ ...spec, networks: [address] }, { ...options, signal: gone.signal }), {
        code: 'ERR_FERRY_ABORTED',
        message: 'cancelled while connecting',
      });
      await sleep(200);
      assert.equal(mute.accepted, before, 'it dialed after all');
    } finally {
      mute.close();
    }
  });

  // Key update on: the lost network carried frames of several epochs, and what it lost goes again under the current one.
  for (const fault of ['cut', 'blackhole'] as const) {
    it(`the first network is ${fault === 'cut' ? 'cut' : 'silenced'} in epoch 3; retransmissions are sealed under the current epoch and all arrives once`, async () => {
      const spec = makeSpec('encrypted', ['127.0.0.2:0', '127.0.0.3:0'], { streams: 2 });
      const options = {
        stallTimeoutMs: 400,
        keepaliveMs: 100,
        handshakeTimeoutMs: 400,
        connectTimeoutMs: 400,
        windowBytes: 16 * MiB,
        keyBudgetBytes: 4 * MiB,
      };
      l = await listenChannel(spec, options);
      relay = await startWanEmulator({ target: l.networks[0]!, listen: '127.0.0.2:0', delayMs: 0 });
      const src = await connectChannel({ ...spec, networks: [relay.address, l.networks[1]!] }, options);
      let faulted = false;
      const size = 256 * 1024;
      const [digest, got] = await Promise.all([
        sendAll(src, 160, size),
        receiveAll(l.channel, size, () => {
          if (!faulted && l!.channel.stats.keyEpochReceived === 3) {
            faulted = true;
            if (fault === 'cut') relay!.cut();
            else relay!.blackhole();
          }
        }).then(async (r) => (await l!.channel.end(), r)),
      ]);
      assert.ok(faulted);
      assert.equal(got.count, 160, 'no message lost');
      assert.equal(got.outOfOrder, 0);
      assert.equal(got.digest, digest);
      assert.equal(l.channel.stats.messagesReceived, 160, 'no duplicate reached the consumer');
      assert.ok(src.stats.failovers >= 1);
      assert.ok(src.stats.retransmittedMessages > 0, 'messages in flight on the lost network were sent again');
      // 40 MiB at 4 MiB an epoch, plus what was sent twice.
      assert.ok(src.stats.keyEpochSent >= 9, `epoch ${src.stats.keyEpochSent}`);
      assert.equal(l.channel.stats.keyEpochReceived, src.stats.keyEpochSent);
      assert.equal(src.error, null);
    });
  }
});
