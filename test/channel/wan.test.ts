/**
 * Pipelining: through the user-space WAN emulator at the same bandwidth cap both ways, a 150 ms
 * round trip must keep at least half the throughput of a 0.5 ms one (a loose functional floor —
 * the real target, 0.9×, is measured by `ferry bench channel`). The cap makes the ratio about the
 * window and the pipeline, not about this shared machine's CPU.
 */
import assert from 'node:assert/strict';
import { connectChannel, listenChannel } from '../../src/channel/index.js';
import { startWanEmulator } from '../../src/bench/wan-emulator.js';
import { makeSpec } from '../support/channel.js';

const CAP = 25_000_000; // 200 Mbit/s each way
const MESSAGES = 96;
const SIZE = 256 * 1024; // 24 MiB: about a second at the cap

async function throughput(rttMs: number): Promise<number> {
  const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 2 });
  const l = await listenChannel(spec);
  const wan = await startWanEmulator({ target: l.networks[0]!, delayMs: rttMs / 2, bytesPerSecond: CAP });
  try {
    const src = await connectChannel({ ...spec, networks: [wan.address] });
    const payload = Buffer.alloc(SIZE, 7);
    const start = performance.now();
    const receiving = (async () => {
      let bytes = 0;
      for (let m = await l.channel.receive(); m; m = await l.channel.receive()) bytes += m.payload.length;
      await l.channel.end();
      return bytes;
    })();
    for (let i = 0; i < MESSAGES; i++) await src.send(0, payload);
    await src.end();
    const bytes = await receiving;
    assert.equal(bytes, MESSAGES * SIZE);
    return bytes / ((performance.now() - start) / 1000);
  } finally {
    await wan.close();
    await l.close();
  }
}

describe('throughput over a long fat pipe (WAN emulator)', function () {
  this.timeout(60_000);
  it('at 150 ms RTT is at least half of that at 0.5 ms, same 200 Mbit/s cap', async () => {
    const near = await throughput(0.5);
    const far = await throughput(150);
    console.log(`      0.5 ms: ${(near / 1e6).toFixed(1)} MB/s, 150 ms: ${(far / 1e6).toFixed(1)} MB/s, ratio ${(far / near).toFixed(2)}`);
    assert.ok(far >= near / 2, `150 ms RTT gave ${far.toFixed(0)} B/s, under half of ${near.toFixed(0)} B/s`);
  });
});
