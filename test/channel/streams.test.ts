/**
 * Byte streams over a real encrypted channel (src/channel/streams.ts), between real unix sockets:
 * every stream's bytes arrive whole and in order both ways, a stream whose reader stops does not
 * hold up the others, ends travel, and a peer that breaks the credit rule fails the mux.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type IpcNetConnectOpts, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { connectChannel, listenChannel, type Channel, type ChannelListener } from '../../src/channel/index.js';
import { STREAM_MSG, StreamMux } from '../../src/channel/streams.js';
import { FerryError } from '../../src/errors.js';
import { makeSpec } from '../support/channel.js';
import { sleep } from '../../src/common/async.js';

const WINDOW = 1 << 20;

/** Feeds every message of `channel` to `mux`, connecting a socket to `connectTo` for each OPEN, in order. */
function pump(channel: Channel, mux: StreamMux, connectTo?: string): Promise<void> {
  return (async () => {
    let opening = Promise.resolve();
    for (;;) {
      const m = await channel.receive();
      if (m === null) return;
      const r = mux.handle(m);
      if (typeof r === 'object') {
        const id = r.open;
        opening = opening.then(
          () =>
            new Promise<void>((resolve, reject) => {
              const s = connect({ path: connectTo!, allowHalfOpen: true });
              s.once('connect', () => {
                mux.accept(id, s);
                resolve();
              });
              s.once('error', reject);
            }),
        );
      }
    }
  })();
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Every socket a test opened or its servers accepted: destroyed after each test, so none keeps mocha's process alive. */
const opened = new Set<Socket>();
const connect = (options: IpcNetConnectOpts): Socket => {
  const s = createConnection(options);
  opened.add(s);
  return s;
};

describe('channel: byte streams over the channel', function () {
  let dir: string;
  let listener: ChannelListener | undefined;
  const servers: Server[] = [];

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-streams-'));
  });
  afterEach(async () => {
    for (const s of servers.splice(0)) s.close();
    for (const s of opened) s.destroy();
    opened.clear();
    await listener?.close();
    listener = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  /** `relay`: the relay's own listener, whose sockets the mux takes (half-open, as it needs). */
  async function unixServer(name: string, onSocket: (s: Socket) => void, relay = false): Promise<string> {
    const p = path.join(dir, name);
    const server = createServer({ allowHalfOpen: relay }, onSocket).on('connection', (s: Socket) => opened.add(s));
    servers.push(server);
    await new Promise<void>((r) => server.listen(p, r));
    return p;
  }

  async function channels(mode: 'encrypted' | 'plain'): Promise<{ src: Channel; dst: Channel }> {
    const spec = makeSpec(mode, ['127.0.0.1:0'], { streams: 2 });
    listener = await listenChannel(spec);
    const src = await connectChannel({ ...spec, networks: listener.networks });
    return { src, dst: listener.channel };
  }

  for (const mode of ['encrypted', 'plain'] as const) {
    it(`${mode}: three streams, both ways at once, each byte for byte and in order`, async function () {
      const { src, dst } = await channels(mode);
      const srcMux = new StreamMux(src, { windowBytes: WINDOW });
      const dstMux = new StreamMux(dst, { windowBytes: WINDOW });
      const forward = [randomBytes(5 << 20), randomBytes(3 << 20), randomBytes(64 << 10)];
      const back = [randomBytes(2 << 20), randomBytes(100), randomBytes(0)];
      // "QEMU" at the destination: for each connection, in accept order, check what comes and answer.
      const gotAtDst: Promise<Buffer>[] = [];
      let accepted = 0;
      const dstPath = await unixServer('dst.sock', (s) => {
        const i = accepted++;
        gotAtDst.push(
          new Promise((resolve) => {
            const parts: Buffer[] = [];
            s.on('data', (d) => parts.push(d));
            s.on('end', () => resolve(Buffer.concat(parts)));
          }),
        );
        s.end(back[i]);
      });
      // "QEMU" at the source connects three times; the relay opens a stream per connection in accept order.
      let opened = 0;
      const srcPath = await unixServer('src.sock', (s) => srcMux.open(opened++, s), true);
      void pump(src, srcMux);
      void pump(dst, dstMux, dstPath);
      const gotAtSrc = await Promise.all(
        forward.map(
          (data, i) =>
            new Promise<Buffer>((resolve, reject) => {
              // One after the other, so accept order is stream order.
              setTimeout(() => {
                const s = connect({ path: srcPath });
                const parts: Buffer[] = [];
                s.on('data', (d) => parts.push(d));
                s.on('end', () => resolve(Buffer.concat(parts)));
                s.on('error', reject);
                s.end(data);
              }, i * 50);
            }),
        ),
      );
      const atDst = await Promise.all(gotAtDst);
      for (let i = 0; i < 3; i++) {
        assert.equal(sha(atDst[i]!), sha(forward[i]!), `stream ${i} forward`);
        assert.equal(sha(gotAtSrc[i]!), sha(back[i]!), `stream ${i} back`);
      }
      assert.equal(
        srcMux.stats().reduce((n, s) => n + s.bytesSent, 0),
        (8 << 20) + (64 << 10),
      );
      src.close();
      dst.close();
    });
  }

  it('a stream whose reader has stopped holds its writer back, and the other streams flow past it', async function () {
    const { src, dst } = await channels('encrypted');
    const srcMux = new StreamMux(src, { windowBytes: WINDOW });
    const dstMux = new StreamMux(dst, { windowBytes: WINDOW });
    const sockets: Socket[] = [];
    const dstPath = await unixServer('dst.sock', (s) => sockets.push(s));
    let opened = 0;
    const srcPath = await unixServer('src.sock', (s) => srcMux.open(opened++, s), true);
    void pump(src, srcMux);
    void pump(dst, dstMux, dstPath);
    const stuck = connect({ path: srcPath });
    await new Promise((r) => stuck.once('connect', r));
    await sleep(50);
    const moving = connect({ path: srcPath });
    await new Promise((r) => moving.once('connect', r));
    while (sockets.length < 2) await sleep(10);
    const [stuckEnd, movingEnd] = sockets as [Socket, Socket];
    stuckEnd.pause(); // the destination reader of stream 0 takes nothing
    // Stream 0's writer offers far more than a window; stream 1 must still get all of its bytes.
    let offered = 0;
    const chunk = randomBytes(256 << 10);
    const offer = () => {
      while (offered < 16 << 20 && stuck.write(chunk)) offered += chunk.length;
    };
    stuck.on('drain', offer);
    offer();
    const data = randomBytes(4 << 20);
    const received: Buffer[] = [];
    movingEnd.on('data', (d) => received.push(d));
    moving.end(data);
    await new Promise((r) => movingEnd.once('end', r));
    assert.equal(sha(Buffer.concat(received)), sha(data));
    const s0 = srcMux.stats().find((s) => s.id === 0)!;
    // The window, plus what the kernel's socket buffers took before the paused reader stopped them.
    assert.ok(s0.bytesSent <= WINDOW + (1 << 20), `stream 0 sent ${s0.bytesSent} bytes with a window of ${WINDOW}`);
    assert.ok(s0.creditStalls > 0, 'stream 0 ran out of credit');
    assert.ok(offered < 16 << 20, 'the source writer of stream 0 was held back');
    src.close();
    dst.close();
  });

  it('refuses a peer that sends beyond the credit it was given: ERR_FERRY_FRAME, every stream closed', async function () {
    const { src, dst } = await channels('encrypted');
    const dstMux = new StreamMux(dst, { windowBytes: WINDOW });
    const dstPath = await unixServer('dst.sock', () => {});
    const failed = pump(dst, dstMux, dstPath);
    const id = Buffer.alloc(4);
    await src.send(STREAM_MSG.OPEN, id);
    await src.send(STREAM_MSG.DATA, [id, Buffer.alloc(WINDOW)]);
    await src.send(STREAM_MSG.DATA, [id, Buffer.alloc(1)]);
    await assert.rejects(failed, (e: FerryError) => e.code === 'ERR_FERRY_FRAME' && /beyond its credit/.test(e.message));
    assert.equal(dstMux.error?.code, 'ERR_FERRY_FRAME');
    src.close();
    dst.close();
  });

  it('refuses messages for streams never opened, and streams opened twice', async function () {
    for (const [type, body] of [
      [STREAM_MSG.DATA, Buffer.from([0, 0, 0, 7, 1])],
      [STREAM_MSG.OPEN, Buffer.from([0, 0, 0, 1, 9])],
    ] as const) {
      const { src, dst } = await channels('plain');
      const dstMux = new StreamMux(dst, { windowBytes: WINDOW });
      const failed = pump(dst, dstMux, path.join(dir, 'none.sock'));
      await src.send(type, body);
      await assert.rejects(failed, (e: FerryError) => e.code === 'ERR_FERRY_FRAME');
      src.close();
      dst.close();
      await listener?.close();
      listener = undefined;
    }
  });
});
