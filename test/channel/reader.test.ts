/**
 * The socket read path over real sockets: readInPlace switches an accepted and a connected socket
 * to reads into the reader's buffers (so a Node that drops the hook shows here, not as a silent
 * slowdown), bytes the stream had already buffered come first, and every frame arrives whole and
 * in order, large ones straight into the memory given for them.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { RawFrame } from '../../src/channel/decoder.js';
import { FrameReader, readInPlace } from '../../src/channel/reader.js';
import { FrameType, HEADER_BYTES, writeHeader } from '../../src/channel/wire.js';

function dataFrame(sequence: number, size: number): Buffer {
  const buf = Buffer.alloc(HEADER_BYTES + size, sequence & 0xff);
  writeHeader(buf, {
    type: FrameType.DATA,
    flags: 0,
    messageType: 1,
    connectionId: 5,
    sequence,
    messageNumber: sequence,
    payloadLength: size,
    migrationId: undefined,
  });
  return buf;
}

describe('frame reader on real sockets', function () {
  this.timeout(30_000);
  let server: Server;
  const sockets: Socket[] = [];

  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    if (server) await new Promise((r) => server.close(r));
  });

  async function pair(): Promise<{ accepted: Socket; client: Socket }> {
    server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    const client = connect({ host: '127.0.0.1', port });
    const [accepted] = (await once(server, 'connection')) as [Socket];
    await once(client, 'connect');
    sockets.push(client, accepted);
    return { accepted, client };
  }

  function collect(socket: Socket, target: boolean): { frames: RawFrame[]; chunks: number; done: Promise<void>; inPlace: () => boolean } {
    const reader = new FrameReader(undefined, target ? (h, n) => (h.type === FrameType.DATA ? new Uint8Array(n) : null) : undefined);
    const frames: RawFrame[] = [];
    const state = { frames, chunks: 0, done: once(socket, 'end').then(() => {}), inPlace: () => inPlace };
    const inPlace = readInPlace(
      socket,
      reader,
      (chunk) => {
        state.chunks++;
        reader.push(chunk, frames);
      },
      (n) => reader.read(n, frames),
    );
    socket.on('data', () => assert.fail('no data event once reading in place'));
    socket.resume();
    return state;
  }

  function check(frames: RawFrame[], sizes: number[], target: boolean): void {
    assert.equal(frames.length, sizes.length);
    frames.forEach((f, i) => {
      assert.equal(f.header.sequence, i);
      assert.equal(f.body.length, sizes[i]);
      assert.ok(
        f.body.every((b) => b === (i & 0xff)),
        `frame ${i} intact`,
      );
      assert.equal(f.target !== undefined, target, target ? 'the body is in the given memory' : 'no given memory');
    });
  }

  for (const target of [false, true]) {
    it(`an accepted socket, small and large frames${target ? ', bodies into given memory' : ''}`, async () => {
      const { accepted, client } = await pair();
      const got = collect(accepted, target);
      assert.equal(got.inPlace(), true, 'this Node lets an existing socket read into chosen buffers');
      const sizes = [0, 10, 300_000, 5, 70_000, 4096, 1_000_000, 1];
      for (let i = 0; i < sizes.length; i++) client.write(dataFrame(i, sizes[i]!));
      client.end();
      await got.done;
      check(got.frames, sizes, target);
    });
  }

  it('a connected socket, with bytes the stream buffered before the switch', async () => {
    const { accepted, client } = await pair();
    const sizes = [100, 200_000, 3, 50_000];
    accepted.write(Buffer.concat([dataFrame(0, sizes[0]!), dataFrame(1, sizes[1]!).subarray(0, 1000)]));
    await once(client, 'readable');
    assert.ok(client.readableLength > 0, 'bytes wait in the stream');
    const got = collect(client, false);
    assert.equal(got.inPlace(), true);
    assert.ok(got.chunks > 0, 'the buffered bytes were handed over first');
    accepted.write(dataFrame(1, sizes[1]!).subarray(1000));
    accepted.write(dataFrame(2, sizes[2]!));
    accepted.end(dataFrame(3, sizes[3]!));
    await got.done;
    check(got.frames, sizes, false);
  });
});
