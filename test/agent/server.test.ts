/**
 * The control server's frame, in process over real TLS with handler tables written for the test:
 * streaming events before the result, time limits that abort the handler, and the one wrapper
 * that turns anything thrown into a coded error.
 */
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { AgentClient } from '../../src/control/client.js';
import { createLogger } from '../../src/common/log.js';
import { ControlServer, type HandlerTable } from '../../src/agent/server.js';
import type { TlsCredentials } from '../../src/control/tls.js';
import { loadCluster } from '../../src/coordinator/cluster.js';
import { coordinatorCredentials } from '../../src/coordinator/connect.js';
import { FerryError } from '../../src/errors.js';
import { TestCluster } from '../support/cluster.js';
import { sleep } from '../../src/common/async.js';

describe('agent: control server frame (in process, real TLS)', function () {
  let cluster: TestCluster;
  let hostCreds: TlsCredentials;
  let clientCreds: TlsCredentials;
  let logFd: number;
  const servers: ControlServer[] = [];
  const clients: AgentClient[] = [];

  before(async function () {
    cluster = TestCluster.create();
    const dir = await cluster.addHost('a');
    hostCreds = {
      ca: readFileSync(path.join(dir, 'ca.crt')),
      cert: readFileSync(path.join(dir, 'host.crt')),
      key: readFileSync(path.join(dir, 'host.key')),
    };
    clientCreds = await coordinatorCredentials(await loadCluster(cluster.file));
    logFd = openSync(path.join(cluster.root, 'server.log'), 'w');
  });
  after(async function () {
    for (const c of clients) c.close();
    for (const s of servers) await s.close();
    if (logFd !== undefined) closeSync(logFd);
    await cluster?.stop();
  });

  async function serve(handlers: HandlerTable): Promise<AgentClient> {
    const server = new ControlServer({
      credentials: hostCreds,
      handlers,
      hello: { agentVersion: 'test', host: 'a' },
      log: createLogger({ fd: logFd }),
    });
    servers.push(server);
    const address = await server.listen({ host: '127.0.0.1', port: 0 });
    const client = await AgentClient.connect({ address, host: 'a', credentials: clientCreds });
    clients.push(client);
    return client;
  }

  const guest = {
    name: 'g',
    driver: 'synthetic' as const,
    memoryBytes: 1 << 20,
    diskBytes: 0,
    workload: { kind: 'idle' as const },
    nic: 'virtio' as const,
    encryptedMigration: 'opportunistic' as const,
  };

  it('streams events in order before the result', async function () {
    const client = await serve({
      'migration.prepare-incoming': {
        roles: ['coordinator'],
        run: async (p, ctx) => {
          for (let i = 1; i <= 5; i++) ctx.emit({ type: 'queued', position: 6 - i });
          return { migrationId: p.migrationId, networks: [], nicFallback: false, guest: p.guest };
        },
      },
    });
    const seen: number[] = [];
    const r = await client.call(
      'migration.prepare-incoming',
      {
        migrationId: 'm-1',
        mode: 'plain',
        streams: 1,
        guest,
        source: 'b',
      },
      { secret: Buffer.alloc(40), onEvent: (e) => seen.push(e.position) },
    );
    assert.deepEqual(seen, [5, 4, 3, 2, 1]);
    assert.equal(r.migrationId, 'm-1');
  });

  it('hands a keyed handler the trailer as Buffers and zeroes them once it settles, also when it fails', async function () {
    const handed: Buffer[] = [];
    const client = await serve({
      'migration.prepare-incoming': {
        roles: ['coordinator'],
        timeoutMs: null,
        run: async (p, ctx) => {
          handed.push(ctx.key.key, ctx.key.nonce);
          assert.ok(
            ctx.key.key.equals(Buffer.alloc(32, 0xa5)) && ctx.key.nonce.equals(Buffer.alloc(8, 0x5a)),
            'the trailer, split into key and nonce',
          );
          await sleep(50); // still holding them across a wait, as a real handler does
          assert.ok(
            handed.slice(-2).every((b) => b.some((x) => x !== 0)),
            'not zeroed while the handler runs',
          );
          if (p.migrationId === 'm-fail') throw new FerryError('ERR_FERRY_REFUSED', 'refused after taking the key');
          return { migrationId: p.migrationId, networks: [], nicFallback: false, guest: p.guest };
        },
      },
      'guest.get': { roles: ['coordinator'], run: async () => assert.fail('a request with a stray trailer reached its handler') },
    });
    const secret = Buffer.concat([Buffer.alloc(32, 0xa5), Buffer.alloc(8, 0x5a)]);
    const params = { migrationId: 'm-ok', mode: 'plain' as const, streams: 1, guest, source: 'b' };
    assert.equal((await client.call('migration.prepare-incoming', params, { secret })).migrationId, 'm-ok');
    assert.equal(handed.length, 2);
    assert.ok(
      handed.every((b) => b.every((x) => x === 0)),
      'zeroed after the request completed',
    );
    await assert.rejects(client.call('migration.prepare-incoming', { ...params, migrationId: 'm-fail' }, { secret }), {
      code: 'ERR_FERRY_REFUSED',
    });
    assert.equal(handed.length, 4);
    assert.ok(
      handed.every((b) => b.every((x) => x === 0)),
      'zeroed after the request failed',
    );
    assert.ok(
      handed[0]!.buffer !== secret.buffer && secret.equals(Buffer.concat([Buffer.alloc(32, 0xa5), Buffer.alloc(8, 0x5a)])),
      'the caller keeps (and wipes) its own copy',
    );
    // Refused before the handler: it never sees the key.
    await assert.rejects(client.call('migration.prepare-incoming', params, { secret: secret.subarray(0, 39) }), {
      code: 'ERR_FERRY_INPUT',
      message: /secret trailer of 40 bytes.*not 39/,
    });
    await assert.rejects(client.call('migration.prepare-incoming', params), { code: 'ERR_FERRY_INPUT', message: /got none/ });
    await assert.rejects(client.call('guest.get', { name: 'g' }, { secret }), {
      code: 'ERR_FERRY_INPUT',
      message: /guest\.get takes no secret trailer/,
    });
    assert.equal(handed.length, 4);
  });

  it('ends a request at its time limit with ERR_FERRY_TIMEOUT and aborts the handler', async function () {
    let aborted: unknown = null;
    const client = await serve({
      capabilities: {
        roles: ['coordinator'],
        timeoutMs: 150,
        run: (_p, ctx) =>
          new Promise((_, reject) =>
            ctx.signal.addEventListener('abort', () => {
              aborted = ctx.signal.reason;
              reject(ctx.signal.reason);
            }),
          ),
      },
    });
    await assert.rejects(client.call('capabilities', {}), { code: 'ERR_FERRY_TIMEOUT', message: /capabilities took longer than 150 ms/ });
    assert.equal((aborted as FerryError).code, 'ERR_FERRY_TIMEOUT');
  });

  it('turns whatever a handler throws into a coded error, and keeps serving', async function () {
    let calls = 0;
    const client = await serve({
      'guest.get': {
        roles: ['coordinator'],
        run: async ({ name }) => {
          calls++;
          if (name === 'plain') throw new Error('something broke');
          if (name === 'coded') throw new FerryError('ERR_FERRY_NOT_FOUND', 'no such guest');
          throw new TypeError('x is not a function');
        },
      },
    });
    await assert.rejects(client.call('guest.get', { name: 'plain' }), { code: 'ERR_FERRY_INTERNAL', message: 'something broke' });
    await assert.rejects(client.call('guest.get', { name: 'coded' }), { code: 'ERR_FERRY_NOT_FOUND', message: 'no such guest' });
    await assert.rejects(client.call('guest.get', { name: 'typed' }), { code: 'ERR_FERRY_INTERNAL' });
    await assert.rejects(client.call('guest.list', {}), { code: 'ERR_FERRY_INPUT', message: /unknown method/ });
    assert.equal(calls, 3);
  });

  it('answers many requests in flight on one connection, each to its caller', async function () {
    const client = await serve({
      'guest.get': {
        roles: ['coordinator'],
        run: async ({ name }) => {
          await new Promise((r) => setTimeout(r, Number(name.slice(1)) % 7));
          throw new FerryError('ERR_FERRY_NOT_FOUND', name);
        },
      },
    });
    const names = Array.from({ length: 40 }, (_, i) => `g${i}`);
    const answers = await Promise.all(names.map((name) => client.call('guest.get', { name }).catch((e: FerryError) => e.message)));
    assert.deepEqual(answers, names);
  });
});
