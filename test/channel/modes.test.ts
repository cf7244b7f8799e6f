/**
 * The three encrypted-migration settings, from the coordinator's decision to the wire: the mode is
 * in both specs, so a peer or a relay that tries the other mode is refused, never followed.
 */
import assert from 'node:assert/strict';
import { FerryError } from '../../src/errors.js';
import { connectChannel, listenChannel, type ChannelListener } from '../../src/channel/index.js';
import { decideMode } from '../../src/coordinator/mode.js';
import { Flag, FrameType, HEADER_BYTES, TAG_BYTES } from '../../src/channel/wire.js';
import { TamperRelay } from '../support/tamper-relay.js';
import { makeSpec } from '../support/channel.js';

const FAST = { handshakeTimeoutMs: 500, connectTimeoutMs: 300, connectRounds: 1, reconnectTimeoutMs: 1000 };
const SECRET = Buffer.from('guest page with a secret: 4242-4242-4242-4242');

async function viaRelay(mode: 'encrypted' | 'plain'): Promise<{ seen: Buffer; got: Buffer }> {
  const spec = makeSpec(mode, ['127.0.0.1:0'], { streams: 1 });
  const l = await listenChannel(spec, FAST);
  const [host, port] = l.networks[0]!.split(':');
  const relay = await new TamperRelay({ host: host!, port: Number(port) }, (f) => [f.bytes]).start();
  try {
    const src = await connectChannel({ ...spec, networks: [relay.address] }, FAST);
    await src.send(1, SECRET);
    const got = Buffer.from((await l.channel.receive())!.payload);
    src.close();
    return { seen: Buffer.concat(relay.frames.map((f) => f.bytes)), got };
  } finally {
    relay.cut();
    await l.close();
  }
}

describe('modes: disabled, opportunistic, required', () => {
  it('encrypted: the payload never appears on the wire', async () => {
    const { seen, got } = await viaRelay('encrypted');
    assert.ok(got.equals(SECRET));
    assert.equal(seen.indexOf(SECRET.subarray(0, 16)), -1);
  });

  it('opportunistic with a peer that cannot encrypt: plain frames, same framing, the data arrives', async () => {
    const decision = decideMode('opportunistic', { name: 'a', encrypts: true }, { name: 'b', encrypts: false });
    const { seen, got } = await viaRelay(decision.mode);
    assert.ok(got.equals(SECRET));
    assert.notEqual(seen.indexOf(SECRET), -1, 'plain mode carries the payload in the clear');
  });

  describe('no downgrade', () => {
    let l: ChannelListener | undefined;
    afterEach(async () => {
      await l?.close();
      l?.channel.close();
    });

    for (const [dst, src] of [
      ['encrypted', 'plain'],
      ['plain', 'encrypted'],
    ] as const) {
      it(`a source in ${src} mode is refused by a destination in ${dst} mode (ERR_FERRY_REFUSED), which stays untouched`, async () => {
        const spec = makeSpec(dst, ['127.0.0.1:0'], { streams: 1 });
        const rejected: FerryError[] = [];
        l = await listenChannel(spec, { ...FAST, onRejectedConnection: (e) => rejected.push(e) });
        await assert.rejects(
          connectChannel({ ...spec, mode: src, networks: l.networks }, FAST),
          (e: FerryError) => e.code === 'ERR_FERRY_NETWORK',
        );
        assert.equal(rejected[0]?.code, 'ERR_FERRY_REFUSED');
        assert.equal(l.channel.error, null);
        assert.equal(l.channel.stats.connectionsOpened, 0);
      });
    }

    it('a relay that strips the encryption from a frame mid-stream is refused (ERR_FERRY_REFUSED)', async () => {
      const spec = makeSpec('encrypted', ['127.0.0.1:0'], { streams: 1 });
      l = await listenChannel(spec, FAST);
      const [host, port] = l.networks[0]!.split(':');
      const relay = await new TamperRelay({ host: host!, port: Number(port) }, (f) => {
        if (f.header.type !== FrameType.DATA || f.index !== 2) return [f.bytes];
        const plain = Buffer.from(f.bytes.subarray(0, f.bytes.length - TAG_BYTES));
        plain[2]! &= ~Flag.ENCRYPTED;
        SECRET.copy(plain, HEADER_BYTES);
        return [plain];
      }).start();
      try {
        const src = await connectChannel({ ...spec, networks: [relay.address] }, FAST);
        await src.send(1, Buffer.alloc(SECRET.length));
        assert.ok((await l.channel.receive())!.payload.every((b) => b === 0));
        await src.send(1, Buffer.alloc(SECRET.length));
        await assert.rejects(l.channel.receive(), (e: FerryError) => e.code === 'ERR_FERRY_REFUSED' && /no downgrade/.test(e.message));
        src.close();
      } finally {
        relay.cut();
      }
    });
  });
});
