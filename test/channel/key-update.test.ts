/**
 * Key update inside a migration: each direction crosses dozens of key epochs on every backend, the
 * frames of a later epoch are byte for byte the same whatever backend sealed them, and a failover
 * in the middle of it loses nothing (failover.test.ts: retransmissions are sealed again under the
 * current epoch).
 */
import assert from 'node:assert/strict';
import { connectChannel, listenChannel, type ChannelListener, type ChannelOptions } from '../../src/channel/index.js';
import { FrameType } from '../../src/channel/wire.js';
import { forEachBackend, loadAllBackends } from '../support/backends.js';
import { makeSpec, receiveAll, sendAll } from '../support/channel.js';
import { TamperRelay } from '../support/tamper-relay.js';

const MiB = 1024 * 1024;

forEachBackend('key update', (backend) => {
  let l: ChannelListener | undefined;
  afterEach(async () => {
    await l?.close();
    l = undefined;
  });

  it('288 MiB one way and 72 MiB back, 8 MiB an epoch: 30+ epochs each way, every message intact', async function () {
    this.timeout(180_000);
    const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 2 });
    const options: ChannelOptions = { backend: backend(), keyBudgetBytes: 8 * MiB };
    l = await listenChannel(spec, options);
    const dst = l.channel;
    const src = await connectChannel({ ...spec, networks: l.networks }, options);
    const [sent, got, back, gotBack] = await Promise.all([
      sendAll(src, 288, MiB),
      receiveAll(dst, MiB),
      sendAll(dst, 288, MiB / 4),
      receiveAll(src, MiB / 4),
    ]);
    assert.equal(got.count, 288);
    assert.equal(got.outOfOrder, 0);
    assert.equal(got.digest, sent);
    assert.equal(gotBack.count, 288);
    assert.equal(gotBack.digest, back);
    // 8 frames of 1 MiB fill an epoch: 288 MiB are epochs 0 to 35. Each side's acknowledgements of
    // the other's data are sealed under the same budget, and how many there are depends on timing
    // (one run of the full suite sealed enough of them to reach epoch 36): one epoch more at most.
    assert.ok(src.stats.keyEpochSent >= 35 && src.stats.keyEpochSent <= 36, `${src.stats.keyEpochSent}`);
    assert.equal(dst.stats.keyEpochReceived, src.stats.keyEpochSent);
    assert.ok(dst.stats.keyEpochSent >= 8 && dst.stats.keyEpochSent <= 9, `72 MiB back: ${dst.stats.keyEpochSent}`);
    assert.equal(src.stats.keyEpochReceived, dst.stats.keyEpochSent);
    assert.equal(src.error, null);
    assert.equal(dst.error, null);
  });
});

describe('key update across backends', function () {
  this.timeout(120_000);

  it('the same messages give the same frames, byte for byte, in every epoch, whatever backend seals them', async function () {
    const { backends, missing } = await loadAllBackends();
    for (const m of missing) console.log(`      not compared: ${m}`);
    if (backends.length < 2) {
      console.log('      skipped: fewer than two backends load here');
      this.skip();
    }
    const spec = { ...makeSpec('encrypted', ['127.0.0.1:0'], { streams: 1 }), migrationId: 'rekey-identical' };
    // No keepalive ACK may slip in between the frames: the stream then depends on the messages alone.
    const quiet = { keyBudgetBytes: 4 * MiB, keepaliveMs: 60_000, stallTimeoutMs: 120_000 };
    const streams: { label: string; frames: Buffer[] }[] = [];
    for (const { label, backend } of backends) {
      const l = await listenChannel(spec, { ...quiet, backend });
      const [host, port] = l.networks[0]!.split(':');
      const relay = await new TamperRelay({ host: host!, port: Number(port) }, (f) => [f.bytes]).start();
      try {
        const src = await connectChannel({ ...spec, networks: [relay.address] }, { ...quiet, backend });
        await Promise.all([sendAll(src, 40, 600_000), receiveAll(l.channel, 600_000).then(() => l.channel.end())]);
        streams.push({ label, frames: relay.frames.filter((f) => f.conn === 0).map((f) => f.bytes) });
        const epochs = new Set(relay.frames.map((f) => f.header.epoch));
        assert.deepEqual([...epochs], [0, 1, 2, 3, 4, 5, 6], `${label}: 6 frames of 600 kB fill an epoch of 4 MiB`);
        assert.equal(relay.frames.filter((f) => f.header.type === FrameType.KEY_UPDATE).length, 6);
      } finally {
        relay.cut();
        await l.close();
      }
    }
    const [first, ...rest] = streams;
    for (const other of rest) {
      assert.equal(other.frames.length, first!.frames.length, `${other.label} sent as many frames as ${first!.label}`);
      other.frames.forEach((b, i) => assert.ok(b.equals(first!.frames[i]!), `frame ${i}: ${other.label} differs from ${first!.label}`));
    }
  });
});
