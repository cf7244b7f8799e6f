/**
 * The QMP client against real QEMU (skipped, saying why, when QEMU is missing): commands and their
 * answers, QEMU's refusals as coded errors, events, a migration between two QEMUs driven through
 * the typed wrappers, and QEMU killed with commands in flight. Then against hostile peers, unix
 * servers run by the test that break QMP in one way each: every break must end in a coded error,
 * never a crash or a hang.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { QmpClient, QmpError, type QmpEvent } from '../../../src/guest/qemu/qmp.js';
import { resolveQemu } from '../../../src/guest/qemu/probe.js';

function isCoded(code: string, ...mentions: (string | RegExp)[]) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof QmpError, `not a QmpError: ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const m of mentions) assert.match(err.message, typeof m === 'string' ? new RegExp(m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : m);
    return true;
  };
}

class Qemu {
  private constructor(
    readonly child: ChildProcess,
    readonly qmpPath: string,
    readonly exited: Promise<void>,
  ) {}

  static start(binary: string, dir: string, name: string, extra: string[] = []): Qemu {
    const qmpPath = path.join(dir, `${name}.qmp`);
    const child = spawn(
      binary,
      [
        '-S',
        '-nodefaults',
        '-display',
        'none',
        '-machine',
        'pc',
        '-accel',
        'tcg',
        '-m',
        '16',
        '-qmp',
        `unix:${qmpPath},server=on,wait=off`,
        ...extra,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    return new Qemu(child, qmpPath, new Promise((resolve) => child.once('exit', () => resolve())));
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}

describe('QMP client', function () {
  this.timeout(60_000);
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-qmp-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe('with QEMU', function () {
    let binary: string;
    const started: Qemu[] = [];
    const start = (name: string, extra?: string[]): Qemu => {
      const q = Qemu.start(binary, dir, name, extra);
      started.push(q);
      return q;
    };
    before(function () {
      const qemu = resolveQemu();
      if (!qemu.executable) {
        console.log(`      skipped: ${qemu.missing}`);
        this.skip();
      }
      binary = qemu.executable;
    });
    afterEach(async () => {
      await Promise.all(started.splice(0).map((q) => q.kill()));
    });

    it('greets with its version and answers many commands in flight, each matched to its own', async () => {
      const q = start('many');
      const qmp = await QmpClient.connect(q.qmpPath, { timeoutMs: 10_000 });
      try {
        assert.ok(qmp.version.major >= 7, `version ${qmp.version.major}`);
        assert.deepEqual(await qmp.queryVersion(), qmp.version);
        const answers = await Promise.all(
          Array.from({ length: 30 }, (_, i) =>
            i % 3 === 0 ? qmp.queryStatus() : i % 3 === 1 ? qmp.queryVersion() : qmp.queryMigrateParameters(),
          ),
        );
        answers.forEach((a, i) => {
          if (i % 3 === 0) assert.deepEqual(a, { status: 'prelaunch', running: false });
          else if (i % 3 === 1) assert.deepEqual(a, qmp.version);
          else assert.ok('maxBandwidth' in a && 'downtimeLimitMs' in a, JSON.stringify(a));
        });
        assert.deepEqual(await qmp.queryMigrate(), { status: 'none' });
        const defaults = await qmp.queryMigrateParameters();
        assert.deepEqual(defaults, { maxBandwidth: 128 * 2 ** 20, downtimeLimitMs: 300, multifdChannels: 2 });
        assert.ok((await qmp.queryMachines()).some((m) => m.alias === 'pc'));
      } finally {
        await qmp.close();
      }
    });

    it('turns QEMU refusing a command into ERR_FERRY_QEMU with the command and class, and goes on', async () => {
      const q = start('refuse');
      const qmp = await QmpClient.connect(q.qmpPath);
      try {
        await assert.rejects(qmp.execute('no-such-command'), (err) => {
          isCoded('ERR_FERRY_QEMU', 'no-such-command', 'CommandNotFound')(err);
          assert.equal((err as QmpError).command, 'no-such-command');
          assert.equal((err as QmpError).qmpClass, 'CommandNotFound');
          return true;
        });
        await assert.rejects(
          qmp.migrateSetParameters({ multifdChannels: 0 }),
          isCoded('ERR_FERRY_QEMU', 'migrate-set-parameters', 'GenericError'),
        );
        assert.equal((await qmp.queryMigrateParameters()).multifdChannels, 2, 'a refused command changes nothing');
        await assert.rejects(qmp.migrateContinue('pre-switchover'), isCoded('ERR_FERRY_QEMU', 'migrate-continue'));
        // Refused by the client before anything is sent.
        await assert.rejects(qmp.migrateSetCapabilities({ 'no-such': true } as never), isCoded('ERR_FERRY_INPUT'));
        await assert.rejects(qmp.migrateSetParameters({ maxBandwidth: -1 }), isCoded('ERR_FERRY_INPUT'));
        await assert.rejects(qmp.migrate(''), isCoded('ERR_FERRY_INPUT'));
        assert.equal((await qmp.queryStatus()).status, 'prelaunch');
      } finally {
        await qmp.close();
      }
    });

    it('delivers STOP and RESUME on stop and cont, to waiters and subscribers', async () => {
      const q = start('events');
      const qmp = await QmpClient.connect(q.qmpPath);
      try {
        const seen: string[] = [];
        const unsubscribe = qmp.onEvent((e) => seen.push(e.event));
        const resumed = qmp.waitForEvent('RESUME', { timeoutMs: 5000 });
        await qmp.cont();
        const resume = await resumed;
        assert.ok(resume.timestamp.seconds > 1_600_000_000);
        assert.deepEqual(await qmp.queryStatus(), { status: 'running', running: true });
        const stopped = qmp.waitForEvent('STOP', { timeoutMs: 5000 });
        await qmp.stop();
        await stopped;
        assert.deepEqual(await qmp.queryStatus(), { status: 'paused', running: false });
        assert.deepEqual(seen, ['RESUME', 'STOP']);
        unsubscribe();
        await qmp.cont();
        await qmp.queryStatus();
        assert.deepEqual(seen, ['RESUME', 'STOP'], 'no events after unsubscribing');
        await assert.rejects(qmp.waitForEvent('RESUME', { timeoutMs: 100 }), isCoded('ERR_FERRY_TIMEOUT', 'RESUME'));
      } finally {
        await qmp.close();
      }
    });

    it('drives a migration: capabilities, parameters, pause before switch-over, continue, cont', async () => {
      const src = start('src');
      const dst = start('dst', ['-incoming', 'defer']);
      const [a, b] = await Promise.all([QmpClient.connect(src.qmpPath), QmpClient.connect(dst.qmpPath)]);
      try {
        assert.equal((await b.queryStatus()).status, 'inmigrate');
        const uri = `unix:${path.join(dir, 'migration.sock')}`;
        await b.migrateSetCapabilities({ 'return-path': true, events: true });
        await b.migrateIncoming(uri);
        await a.migrateSetCapabilities({ 'return-path': true, 'pause-before-switchover': true, events: true });
        await a.migrateSetParameters({ maxBandwidth: 2 ** 30, downtimeLimitMs: 100 });
        // A running source: the destination takes over its run state, and a paused one would stay so.
        await a.cont();
        assert.deepEqual(await a.queryMigrateParameters(), { maxBandwidth: 2 ** 30, downtimeLimitMs: 100, multifdChannels: 2 });
        const status = (s: string) => (e: QmpEvent) => e.data.status === s;
        const paused = a.waitForEvent('MIGRATION', { timeoutMs: 20_000, match: status('pre-switchover') });
        await a.migrate(uri);
        await paused;
        const before = await a.queryMigrate();
        assert.equal(before.status, 'pre-switchover');
        assert.ok(before.ram && before.ram.total >= 16 * 2 ** 20 && before.ram.dirtySyncCount >= 1, JSON.stringify(before));
        const done = a.waitForEvent('MIGRATION', { timeoutMs: 20_000, match: status('completed') });
        const landed = b.waitForEvent('MIGRATION', { timeoutMs: 20_000, match: status('completed') });
        await a.migrateContinue('pre-switchover');
        await Promise.all([done, landed]);
        const after = await a.queryMigrate();
        assert.equal(after.status, 'completed');
        assert.ok(
          after.ram && after.ram.transferred > 0 && after.totalTimeMs !== undefined && after.downtimeMs !== undefined,
          JSON.stringify(after),
        );
        assert.equal((await a.queryStatus()).status, 'postmigrate');
        assert.equal((await b.queryStatus()).status, 'paused', 'the destination waits for cont after -S');
        await b.cont();
        assert.deepEqual(await b.queryStatus(), { status: 'running', running: true });
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    });

    it('cancels a migration, and QEMU goes on from where it was', async () => {
      const src = start('csrc');
      const dst = start('cdst', ['-incoming', 'defer']);
      const [a, b] = await Promise.all([QmpClient.connect(src.qmpPath), QmpClient.connect(dst.qmpPath)]);
      try {
        const uri = `unix:${path.join(dir, 'cancel.sock')}`;
        await b.migrateIncoming(uri);
        await a.migrateSetCapabilities({ events: true });
        // Slow enough that the migration is still going when the cancel arrives.
        await a.migrateSetParameters({ maxBandwidth: 1024 * 1024 });
        const active = a.waitForEvent('MIGRATION', { timeoutMs: 20_000, match: (e) => e.data.status === 'active' });
        await a.migrate(uri);
        await active;
        const cancelled = a.waitForEvent('MIGRATION', { timeoutMs: 20_000, match: (e) => e.data.status === 'cancelled' });
        await a.migrateCancel();
        await cancelled;
        assert.equal((await a.queryMigrate()).status, 'cancelled');
        assert.equal((await a.queryStatus()).status, 'prelaunch');
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    });

    it('rejects every pending command with ERR_FERRY_QEMU when QEMU is killed mid-request', async () => {
      const q = start('killed');
      const qmp = await QmpClient.connect(q.qmpPath);
      // Stopped, QEMU cannot answer: the commands are surely in flight when it dies.
      q.child.kill('SIGSTOP');
      const inFlight = [qmp.queryStatus(), qmp.queryMigrate(), qmp.execute('query-version'), qmp.cont()];
      const event = qmp.waitForEvent('RESUME', { timeoutMs: 30_000 });
      await new Promise((resolve) => setTimeout(resolve, 100));
      q.child.kill('SIGKILL');
      for (const p of inFlight) await assert.rejects(p, isCoded('ERR_FERRY_QEMU', 'QEMU closed the QMP connection'));
      await assert.rejects(event, isCoded('ERR_FERRY_QEMU', 'waiting for RESUME'));
      assert.equal((await qmp.closed).code, 'ERR_FERRY_QEMU');
      await assert.rejects(qmp.queryStatus(), isCoded('ERR_FERRY_QEMU', 'query-status'));
      await qmp.close();
    });

    it('closes without stopping QEMU, which takes a new connection; quit ends it', async () => {
      const q = start('reattach');
      const first = await QmpClient.connect(q.qmpPath);
      await first.cont();
      const pending = first.waitForEvent('STOP', { timeoutMs: 30_000 });
      await first.close();
      await assert.rejects(pending, isCoded('ERR_FERRY_QEMU', 'closed by ferry'));
      const second = await QmpClient.connect(q.qmpPath);
      assert.deepEqual(await second.queryStatus(), { status: 'running', running: true });
      await second.quit();
      await q.exited;
      assert.equal(q.child.exitCode, 0);
    });
  });

  describe('against a hostile peer', function () {
    this.timeout(20_000);
    const servers: net.Server[] = [];
    after(() => servers.forEach((s) => s.close()));

    const GREETING = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}\r\n';

    /** A unix server that greets with `greeting` and hands each command after qmp_capabilities to `answer`. */
    async function peer(
      greeting: string,
      answer: (cmd: { execute: string; id: number }, socket: net.Socket) => void = () => {},
    ): Promise<string> {
      const where = path.join(dir, `peer-${servers.length}.sock`);
      const server = net.createServer((socket) => {
        socket.on('error', () => {});
        socket.write(greeting);
        let buffered = '';
        socket.on('data', (chunk) => {
          buffered += chunk.toString();
          for (let nl = buffered.indexOf('\n'); nl !== -1; nl = buffered.indexOf('\n')) {
            const cmd = JSON.parse(buffered.slice(0, nl));
            buffered = buffered.slice(nl + 1);
            if (cmd.execute === 'qmp_capabilities') socket.write(`{"return": {}, "id": ${cmd.id}}\r\n`);
            else answer(cmd, socket);
          }
        });
      });
      servers.push(server);
      await new Promise<void>((resolve) => server.listen(where, resolve));
      return where;
    }

    const bad = (...mentions: (string | RegExp)[]) => isCoded('ERR_FERRY_QEMU', ...mentions);

    it('refuses a greeting that is not QMP', async () => {
      for (const [greeting, says] of [
        ['hello, I am not QEMU\n', 'not JSON'],
        ['[1, 2, 3]\n', 'not a QMP greeting'],
        ['{"SMTP": {}}\n', 'not a QMP greeting'],
        [
          '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": "7"}, "package": ""}, "capabilities": []}}\n',
          'QMP.version.qemu.major is not a whole number',
        ],
        [
          '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2}, "package": ""}, "capabilities": []}}\n',
          'QMP.version.qemu.major is missing',
        ],
        ['{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": "oob"}}\n', 'capabilities'],
        [
          '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": [], "x": 1}}\n',
          '"x" is not a member',
        ],
        [
          '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}, "more": 1}\n',
          'not a QMP greeting',
        ],
      ]) {
        await assert.rejects(QmpClient.connect(await peer(greeting)), bad(says), greeting);
      }
    });

    it('times out on a peer that never greets, and on a socket nobody listens on', async () => {
      const silent = path.join(dir, 'silent.sock');
      const server = net.createServer(() => {});
      servers.push(server);
      await new Promise<void>((resolve) => server.listen(silent, resolve));
      await assert.rejects(QmpClient.connect(silent, { timeoutMs: 300 }), isCoded('ERR_FERRY_TIMEOUT', 'no QMP greeting'));
      await assert.rejects(QmpClient.connect(path.join(dir, 'nobody.sock'), { timeoutMs: 300 }), isCoded('ERR_FERRY_TIMEOUT', 'ENOENT'));
    });

    it('fails the connection on malformed JSON, rejecting what is pending by name', async () => {
      const qmp = await QmpClient.connect(await peer(GREETING, (_cmd, s) => s.write('{"return": {}, "id": \n')));
      const other = qmp.waitForEvent('STOP', { timeoutMs: 10_000 });
      await assert.rejects(qmp.queryStatus(), bad('query-status', 'not JSON'));
      await assert.rejects(other, bad('waiting for STOP'));
      await assert.rejects(qmp.queryVersion(), bad('query-version', 'not JSON'), 'the connection stays failed');
    });

    it('refuses a line over the limit without buffering the rest of it', async () => {
      let sent = 0;
      const where = await peer(GREETING, (_cmd, s) => {
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        const pump = (): void => {
          while (!s.destroyed && sent < 8 * 2 ** 20 && s.write(chunk)) sent += chunk.length;
          if (!s.destroyed && sent < 8 * 2 ** 20) s.once('drain', pump);
        };
        pump();
      });
      const qmp = await QmpClient.connect(where, { maxLineBytes: 256 * 1024 });
      await assert.rejects(qmp.queryStatus(), bad('query-status', 'longer than 262144 bytes'));
      assert.ok(sent < 8 * 2 ** 20, `the client read all ${sent} bytes`);
    });

    it('fails the connection on an answer to an id it never sent', async () => {
      const qmp = await QmpClient.connect(await peer(GREETING, (cmd, s) => s.write(`{"return": {}, "id": ${cmd.id + 1000}}\n`)));
      await assert.rejects(qmp.stop(), bad('stop', 'never sent'));
    });

    it('fails the connection on an envelope QMP does not define', async () => {
      for (const line of [
        '{"return": {}, "id": ID, "extra": true}',
        '{"return": {}}',
        '{"return": {}, "id": "ID"}',
        '{"neither": {}, "id": ID}',
        '"just a string"',
        '{"event": "STOP", "timestamp": {"seconds": "soon", "microseconds": 0}}',
        '{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 0}, "data": [1]}',
      ]) {
        const qmp = await QmpClient.connect(await peer(GREETING, (cmd, s) => s.write(line.replace('ID', String(cmd.id)) + '\n')));
        await assert.rejects(qmp.queryStatus(), bad('query-status'), line);
        assert.equal((await qmp.closed).code, 'ERR_FERRY_QEMU');
      }
    });

    it('refuses an answer with a missing, mistyped or extra field, naming it and not its value', async () => {
      const answers: Record<string, string> = {
        'query-status': '{"status": "running", "running": "yes-really"}',
        'query-version': '{"qemu": {"major": 7, "minor": 2}, "package": ""}',
        'query-migrate': '{"status": "active", "ram": {"transferred": 1.5}}',
        'query-machines': '{"name": "pc"}',
        stop: '{"unexpected": 1}',
        cont: '[]',
      };
      const qmp = await QmpClient.connect(
        await peer(GREETING, (cmd, s) => {
          if (cmd.execute === 'query-migrate-parameters')
            s.write(`{"return": {"max-bandwidth": 5, "new-in-qemu-99": {"a": 1}}, "id": ${cmd.id}}\n`);
          else if (cmd.execute === 'quit') s.destroy();
          else s.write(`{"return": ${answers[cmd.execute]}, "id": ${cmd.id}}\n`);
        }),
      );
      await assert.rejects(
        qmp.queryStatus(),
        (err) => bad('query-status', 'running is not true or false')(err) && !/yes-really/.test((err as Error).message),
      );
      await assert.rejects(qmp.queryVersion(), bad('query-version', 'qemu.micro is missing'));
      await assert.rejects(qmp.queryMigrate(), bad('query-migrate', 'ram.transferred is not a whole number'));
      await assert.rejects(qmp.queryMachines(), bad('query-machines', 'not a list'));
      await assert.rejects(qmp.stop(), bad('stop', '"unexpected"'));
      await assert.rejects(qmp.cont(), bad('cont', 'not an object'));
      // Members QEMU may add are ignored; the connection is still good after each refusal.
      assert.deepEqual(await qmp.queryMigrateParameters(), { maxBandwidth: 5 });
      await qmp.quit();
    });

    it('passes on an error reply as QEMU words it, made printable and short', async () => {
      const desc = `bad\u0007thing ${'x'.repeat(1000)}`;
      const qmp = await QmpClient.connect(
        await peer(GREETING, (cmd, s) => {
          if (cmd.execute === 'stop') s.write(`${JSON.stringify({ error: { class: 'GenericError', desc }, id: cmd.id })}\n`);
          else s.write(`{"error": {"class": 7}, "id": ${cmd.id}}\n`);
        }),
      );
      await assert.rejects(qmp.stop(), (err) => {
        bad('QEMU refused stop: bad?thing', 'GenericError')(err);
        assert.ok((err as Error).message.length < 400, `${(err as Error).message.length} characters`);
        return true;
      });
      await assert.rejects(qmp.cont(), bad('cont', 'no class and description'));
      await qmp.close();
    });

    it('drops the late answer of a command that timed out, and goes on', async () => {
      const qmp = await QmpClient.connect(
        await peer(GREETING, (cmd, s) => {
          const reply = `{"return": {"status": "paused", "running": false}, "id": ${cmd.id}}\n`;
          if (cmd.id === 2) setTimeout(() => s.write(reply), 300);
          else s.write(reply);
        }),
      );
      await assert.rejects(qmp.execute('query-status', undefined, { timeoutMs: 50 }), isCoded('ERR_FERRY_TIMEOUT', 'query-status'));
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.deepEqual(await qmp.queryStatus(), { status: 'paused', running: false });
      await qmp.close();
    });

    it('does not wait forever for a peer that answers quit and stays', async () => {
      const qmp = await QmpClient.connect(await peer(GREETING, (cmd, s) => s.write(`{"return": {}, "id": ${cmd.id}}\n`)));
      await assert.rejects(qmp.quit({ timeoutMs: 200 }), isCoded('ERR_FERRY_TIMEOUT', 'kept the QMP connection open'));
      assert.equal((await qmp.closed).code, 'ERR_FERRY_QEMU');
    });

    it('keeps reading after a subscriber throws', async () => {
      const qmp = await QmpClient.connect(
        await peer(GREETING, (cmd, s) => {
          s.write('{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}\r\n');
          s.write(`{"return": {"status": "paused", "running": false}, "id": ${cmd.id}}\r\n`);
        }),
      );
      const thrown: unknown[] = [];
      const keep = process.listeners('uncaughtException');
      process.removeAllListeners('uncaughtException');
      process.on('uncaughtException', (err) => thrown.push(err));
      try {
        qmp.onEvent(() => {
          throw new Error('a buggy listener');
        });
        assert.equal((await qmp.queryStatus()).status, 'paused');
        await new Promise((resolve) => setImmediate(resolve));
        assert.equal(thrown.length, 1);
      } finally {
        process.removeAllListeners('uncaughtException');
        keep.forEach((l) => process.on('uncaughtException', l));
        await qmp.close();
      }
    });
  });
});
