/**
 * The agent's router: it reads one bounded HELLO header and hands the socket on by migration id —
 * to a channel in this process, or, as the agent does, to a guest process over IPC. Unknown,
 * malformed or silent connections are dropped without touching any channel.
 */
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { FerryError } from '../../src/errors.js';
import {
  connectChannel,
  createIncomingChannel,
  listenRouter,
  type IncomingChannel,
  type MigrationRouter,
} from '../../src/channel/index.js';
import { FrameType, HELLO_PAYLOAD_BYTES, writeHeader } from '../../src/channel/wire.js';
import { makeSpec, receiveAll, sendAll } from '../support/channel.js';
import type { ByteCount } from './fixtures/count-bytes.js';
import type { GuestReport, ToGuest } from './fixtures/incoming-guest.js';
import { sleep } from '../../src/common/async.js';

const FAST = { handshakeTimeoutMs: 1000, connectTimeoutMs: 500, connectRounds: 1 };

describe('migration router (destination agent)', function () {
  this.timeout(30_000);
  let router: MigrationRouter | undefined;
  let child: ChildProcess | undefined;
  afterEach(async () => {
    await router?.close();
    router = undefined;
    child?.kill('SIGKILL');
    child = undefined;
  });

  it('routes two migrations’ connections by id to their channels (in-process adopt)', async () => {
    const specs = [makeSpec('encrypted', [], { streams: 2 }), makeSpec('plain', [], { streams: 3 })];
    const channels = new Map<string, IncomingChannel>();
    for (const s of specs) channels.set(s.migrationId, await createIncomingChannel(s));
    router = await listenRouter(['127.0.0.1:0', '127.0.0.1:0'], (id, socket, head) => {
      const ch = channels.get(id);
      ch?.adopt(socket, head);
      return ch !== undefined;
    });
    await Promise.all(
      specs.map(async (s) => {
        const src = await connectChannel({ ...s, networks: router!.networks });
        const ch = channels.get(s.migrationId)!;
        const [digest, got] = await Promise.all([sendAll(src, 50, 30_000), receiveAll(ch, 30_000).then(async (r) => (await ch.end(), r))]);
        assert.equal(got.count, 50);
        assert.equal(got.digest, digest);
        assert.equal(ch.stats.connectionsOpened, s.streams);
      }),
    );
  });

  it('drops an unknown migration, garbage and a silent connection, each with a coded reason', async () => {
    const rejected: string[] = [];
    let routed = 0;
    router = await listenRouter(
      ['127.0.0.1:0'],
      () => {
        routed++;
        return false;
      },
      { headerTimeoutMs: 300, onRejected: (e) => rejected.push(e.code) },
    );
    const spec = makeSpec('encrypted', router.networks, { streams: 1 });
    await assert.rejects(connectChannel(spec, FAST), (e: FerryError) => e.code === 'ERR_FERRY_NETWORK');
    const [host, port] = router.networks[0]!.split(':');
    const garbage = connect({ host, port: Number(port) });
    garbage.on('error', () => {});
    garbage.write(Buffer.alloc(64, 0xff));
    await new Promise((r) => garbage.once('close', r));
    const silent = connect({ host, port: Number(port) });
    silent.on('error', () => {});
    await new Promise((r) => silent.once('close', r));
    assert.equal(routed, 1, 'only the well-formed HELLO was offered to the agent');
    assert.deepEqual(rejected, ['ERR_FERRY_NOT_FOUND', 'ERR_FERRY_FRAME', 'ERR_FERRY_TIMEOUT']);
  });

  it('hands sockets to a guest process over IPC; the guest adopts them and gets every byte', async () => {
    const spec = makeSpec('encrypted', [], { streams: 3 });
    const fixture = fileURLToPath(new URL('./fixtures/incoming-guest.ts', import.meta.url));
    child = fork(fixture, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const c = child;
    const result = new Promise<GuestReport>((resolve, reject) => {
      c.on('message', (m) => resolve(m as GuestReport));
      c.on('exit', (code) => reject(new Error(`guest process exited with ${code}`)));
    });
    c.send({
      kind: 'spec',
      spec: { ...spec, key: Buffer.from(spec.key).toString('base64'), nonce: Buffer.from(spec.nonce).toString('base64') },
    } satisfies ToGuest);
    router = await listenRouter(['127.0.0.1:0'], (id, socket, head) => {
      if (id !== spec.migrationId) return false;
      c.send({ kind: 'connection', migrationId: id, head: head.toString('base64') } satisfies ToGuest, socket);
      return true;
    });
    const src = await connectChannel({ ...spec, networks: router.networks });
    const digest = await (async () => {
      const d = sendAll(src, 80, 100_000);
      const reply = await src.receive();
      assert.equal(Buffer.from(reply!.payload).toString(), 'COMMITTED');
      return d;
    })();
    const r = await result;
    assert.ok(r.kind === 'done', JSON.stringify(r));
    assert.notEqual(r.pid, process.pid);
    assert.equal(r.count, 80);
    assert.equal(r.digest, digest);
    assert.equal(r.connections, 3);
    assert.equal(await src.receive(), null);
  });

  it('leaves the bytes that arrive while a hand-over waits to the process that takes the socket', async () => {
    // Node sends one socket at a time over IPC and queues the rest until the child acknowledges the
    // previous one; a source meanwhile sends on. Those bytes must stay in the kernel for the
    // receiving process: read by the router's process, they would be lost with the hand-over.
    const fixture = fileURLToPath(new URL('./fixtures/count-bytes.ts', import.meta.url));
    child = fork(fixture, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const c = child;
    const counted = new Promise<ByteCount>((resolve, reject) => {
      c.on('message', (m) => resolve(m as ByteCount));
      c.on('exit', (code) => reject(new Error(`child exited with ${code}`)));
    });
    let headBytes = -1;
    router = await listenRouter(['127.0.0.1:0'], (_id, socket, head) => {
      headBytes = head.length;
      setTimeout(() => c.send({ kind: 'connection' }, socket), 400);
      return true;
    });
    const hello = Buffer.alloc(64);
    const n = writeHeader(hello, {
      type: FrameType.HELLO,
      flags: 0,
      connectionId: 1,
      sequence: 0,
      messageNumber: 0,
      payloadLength: HELLO_PAYLOAD_BYTES,
      migrationId: 'm-handover',
    });
    const after = Buffer.alloc(256 * 1024, 0x5a);
    const [host, port] = router.networks[0]!.split(':');
    const sock = connect({ host, port: Number(port) });
    sock.on('error', () => {});
    await new Promise((r) => sock.once('connect', r));
    sock.write(hello.subarray(0, n));
    await sleep(150); // routed by now, waiting for its hand-over
    sock.end(after);
    const { bytes } = await counted;
    assert.ok(headBytes >= n, `the router read the HELLO header (${headBytes} bytes)`);
    assert.equal(headBytes + bytes, n + after.length, 'every byte reached the router or the process that took the socket');
  });
});
