/**
 * `ferry bench qemu` as a user runs it (needs `npm run build`, which `npm test` does): --quick, a
 * 64 MiB guest and one round, every variant of every QEMU the bench finds, real QEMU, real guest
 * processes. Speeds are not asserted; that every move completed, with its figures, bytes and the
 * guest's memory intact, is. Skipped, saying why, without QEMU.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { qemuBinaries, schedule, variantLabel, type QemuReport, type Row } from '../../src/bench/qemu.js';
import { parseSs } from '../../src/bench/socket-bytes.js';
import { processesMentioning } from '../support/processes.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const MiB = 2 ** 20;

describe('ferry bench qemu', function () {
  it('orders each round with ferry beside the QEMU variant it is compared with, every second round reversed (ABBA)', function () {
    const plan = schedule(2);
    assert.equal(plan.length, 32);
    const first = plan.filter((s) => s.round === 1).map((s) => `${variantLabel(s.variant)} ${s.state}`);
    const second = plan.filter((s) => s.round === 2).map((s) => `${variantLabel(s.variant)} ${s.state}`);
    assert.deepEqual(second, [...first].reverse());
    assert.deepEqual(first.slice(0, 8), [
      'qemu plain paused',
      'ferry plain x1 paused',
      'qemu multifd x2 paused',
      'ferry plain x2 paused',
      'qemu tls paused',
      'ferry encrypted x1 paused',
      'qemu multifd-tls x2 paused',
      'ferry encrypted x2 paused',
    ]);
    assert.deepEqual(
      first.slice(8),
      first.slice(0, 8).map((l) => l.replace('paused', 'running')),
    );
  });

  it('with --disk, orders the encrypted pair only, the guest running, every second round reversed', function () {
    const plan = schedule(3, true).map((s) => `${s.round} ${variantLabel(s.variant)} ${s.state}`);
    assert.deepEqual(plan, [
      '1 qemu multifd-tls x2 running',
      '1 ferry encrypted x2 running',
      '2 ferry encrypted x2 running',
      '2 qemu multifd-tls x2 running',
      '3 qemu multifd-tls x2 running',
      '3 ferry encrypted x2 running',
    ]);
  });

  it('reads the final tcp_info of both ends of a connection from ss, not the listener', function () {
    const text = [
      'UNCONN 1      0      127.0.0.1:5555 127.0.0.1:45510',
      '\t wscale:10,10 rto:204 bytes_acked:1 bytes_received:100001 segs_out:4',
      'UNCONN 1      0      127.0.0.1:45510 127.0.0.1:5555 ',
      '\t wscale:10,10 rto:204 bytes_sent:100000 bytes_acked:100002 bytes_received:1',
      'UNCONN 0      0      127.0.0.1:5555    0.0.0.0:*    ',
      '\t rto:1000 mss:536 cwnd:10 app_limited',
      'UNCONN 0      0      127.0.0.1:6000 127.0.0.1:6001',
      '\t bytes_sent:7',
    ].join('\n');
    assert.deepEqual(parseSs(text, 5555), [
      { key: '127.0.0.1:5555 127.0.0.1:45510', bytesSent: 0 },
      { key: '127.0.0.1:45510 127.0.0.1:5555', bytesSent: 100000 },
    ]);
  });

  it('refuses bad flags with a usage error before starting anything', function () {
    for (const args of [
      ['--runs', '0'],
      ['--memory', '1GB'],
      ['--memory', '8GiB'],
      ['--qemu', '/nonexistent/qemu'],
      ['--max-downtime', '0'],
      ['--disk', '64MiB'],
      ['--disk', '1GB'],
      ['--disk', 'big'],
    ]) {
      const r = spawnSync(process.execPath, ['bin/ferry', 'bench', 'qemu', ...args], { cwd: root, encoding: 'utf8' });
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.status} ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /probing/, 'nothing was started');
    }
  });

  describe('--quick --json', function () {
    const { binaries, missing } = qemuBinaries(undefined);
    let out: string;
    before(function () {
      if (missing) {
        console.log(`      skipped: ${missing}`);
        this.skip();
      }
      out = path.join(mkdtempSync(path.join(tmpdir(), 'ferry-bench-qemu-test-')), 'qemu.json');
    });
    after(function () {
      if (out) rmSync(path.dirname(out), { recursive: true, force: true });
    });

    it('moves the guest by every variant of every QEMU found, each move completed, and prints one JSON object (also into --out)', function () {
      this.timeout(600_000);
      const r = spawnSync(process.execPath, ['bin/ferry', 'bench', 'qemu', '--quick', '--json', '--out', out], {
        cwd: root,
        encoding: 'utf8',
        timeout: 590_000,
      });
      assert.equal(r.status, 0, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.equal(lines.length, 1, 'exactly one line on stdout');
      assert.equal(readFileSync(out, 'utf8').trim(), lines[0], '--out holds what --json printed');
      const result = JSON.parse(lines[0]!);
      assert.equal(result.ok, true);
      assert.equal(result.subject, 'qemu');
      assert.equal(result.skipped, null);
      assert.match(result.command, /^ferry bench qemu --quick --json/);
      assert.equal(result.settings.memoryBytes, 64 * MiB);
      assert.equal(result.settings.runs, 1);
      const m = result.machine;
      assert.ok(
        m.cpu && m.cores >= 1 && m.memoryBytes > 0 && m.cpuFlags.length > 0 && /^v\d+/.test(m.node) && m.nodeOpenssl,
        JSON.stringify(m),
      );
      assert.equal(m.loadBefore.length, 3);
      assert.deepEqual(
        result.qemus.map((q: QemuReport) => q.binary),
        binaries,
      );
      const plan = schedule(1).map((s) => `${variantLabel(s.variant)} ${s.state}`);
      for (const q of result.qemus as QemuReport[]) {
        assert.equal(q.skipped, null, `${q.binary}: ${q.skipped}`);
        assert.match(q.version ?? '', /QEMU emulator version \d+\.\d+/);
        assert.ok(q.accel === 'tcg' || q.accel === 'kvm');
        assert.deepEqual(
          q.rows.map((x) => `${x.label} ${x.state}`),
          plan,
          q.binary,
        );
        assert.equal(q.warmUp.length, 2);
        assert.deepEqual(
          q.neverWritten.map((x) => x.carrier),
          ['ferry', 'qemu'],
        );
        for (const x of [...q.warmUp, ...q.rows, ...q.neverWritten] as Row[]) {
          const what = `${q.binary} ${x.label} ${x.state}: ${x.error}`;
          assert.equal(x.ok, true, what);
          assert.ok(x.totalMs! > 0 && x.downtimeMs! >= 0 && x.qemuTotalMs! > 0, what);
          assert.deepEqual(x.damage, [], what);
          // Each side's CPU is counted (in clock ticks of /proc: a small move's destination under KVM
          // can take less than one, so more than zero is asked of the moves together, below).
          assert.ok(
            x.cpuSeconds.source !== null && x.cpuSeconds.source >= 0 && x.cpuSeconds.destination !== null && x.cpuSeconds.destination >= 0,
            `${what} ${JSON.stringify(x.cpuSeconds)}`,
          );
          assert.ok(x.vcpuSeconds.source! <= x.cpuSeconds.source! + 0.01, what);
          if (process.getuid?.() === 0)
            assert.ok(x.socketBytes !== null && x.socketBytes >= x.qemuRamBytes!, `${what}: ${x.socketBytes} ${x.notes}`);
          assert.ok(x.wireBytes !== null, what);
          if (q.neverWritten.includes(x)) {
            // A guest that never wrote its memory: its RAM crosses as zero-page markers (and QEMU's firmware images).
            assert.ok(x.wireBytes! < 0.05 * 64 * MiB, `${what}: ${x.wireBytes}`);
          } else {
            // Every page of it is written with a pattern that does not compress: all of it crosses.
            assert.ok(x.wireBytes! >= 60 * MiB && x.qemuRamBytes! >= 60 * MiB, `${what}: ${x.wireBytes}`);
            // A paused guest's vCPU thread does not run its code while it moves (TCG still has it flush its TLB once dirty logging starts).
            if (x.state === 'paused') assert.ok(x.vcpuSeconds.source! <= 0.05, `${what}: the vCPU thread ran ${x.vcpuSeconds.source} s`);
          }
        }
        const moves = [...q.warmUp, ...q.rows, ...q.neverWritten] as Row[];
        assert.ok(moves.reduce((sum, x) => sum + x.cpuSeconds.destination!, 0) > 0, `${q.binary}: no destination CPU counted in any move`);
        assert.equal(q.checks.allCompleted, true);
        assert.equal(q.checks.memoryIntact, true);
        assert.equal(typeof q.checks.neverWrittenWireFraction, 'number');
        for (const v of Object.values(q.ratios)) assert.equal(typeof v.value, 'number');
      }
      const dir = /TLS credentials for QEMU \(openssl\), in (\S+)/.exec(r.stderr)?.[1];
      assert.ok(dir, r.stderr);
      assert.equal(existsSync(dir), false, `${dir} left behind`);
      assert.deepEqual(processesMentioning(dir), []);
    });

    it('with --disk, moves a guest writing its disk by QEMU (NBD + mirror under TLS) and by ferry, and a fresh qcow2, counting disk bytes apart', function () {
      this.timeout(600_000);
      const r = spawnSync(
        process.execPath,
        ['bin/ferry', 'bench', 'qemu', '--quick', '--disk', '128MiB', '--qemu', binaries[0]!, '--json', '--out', out],
        { cwd: root, encoding: 'utf8', timeout: 590_000 },
      );
      assert.equal(r.status, 0, r.stderr);
      const result = JSON.parse(r.stdout.trim());
      assert.equal(result.skipped, null);
      assert.equal(result.settings.diskBytes, 128 * MiB);
      const [q] = result.qemus as QemuReport[];
      assert.equal(q!.skipped, null, q!.skipped ?? '');
      assert.match(q!.append, /disk=64/);
      assert.deepEqual(
        [...q!.warmUp, ...q!.rows].map((x) => x.label),
        ['qemu multifd-tls x2', 'ferry encrypted x2', 'qemu multifd-tls x2', 'ferry encrypted x2'],
      );
      assert.deepEqual(q!.neverWritten, []);
      assert.deepEqual(
        q!.freshDisk.map((x) => x.carrier),
        ['ferry', 'qemu'],
      );
      for (const x of [...q!.warmUp, ...q!.rows, ...q!.freshDisk]) {
        const what = `${x.label}: ${x.error}`;
        assert.equal(x.ok, true, what);
        assert.equal(x.state, 'running');
        // The whole disk was mirrored (the job's offsets reach its size), memory counted apart.
        assert.ok(x.diskBytes! >= 128 * MiB && x.diskReadyMs! > 0, `${what}: ${x.diskBytes} ${x.diskReadyMs}`);
        assert.ok(x.qemuRamBytes! > 0 && x.wireBytes! > x.qemuRamBytes!, what);
        // The guest's disk checks ran on at each destination and found nothing wrong.
        assert.deepEqual(x.damage, [], what);
      }
      for (const x of [...q!.warmUp, ...q!.rows])
        // Random bytes fill the image: all of it crosses, with the guest's memory.
        assert.ok(x.wireBytes! >= 128 * MiB + 60 * MiB, `${x.label}: ${x.wireBytes}`);
      for (const x of q!.freshDisk) {
        assert.equal(x.virtualBytes, 128 * MiB);
        assert.ok(x.diskWireBytes! >= 16 * MiB && x.diskWireBytes! < x.writtenBytes + 0.05 * 128 * MiB, `${x.label}: ${x.diskWireBytes}`);
      }
      assert.equal(typeof q!.checks.freshDiskWireFraction, 'number');
      assert.deepEqual(Object.keys(q!.ratios), [
        'running (memory and disk): ferry encrypted x2 / qemu multifd-tls x2',
        'running: CPU, both sides, ferry encrypted x2 / qemu multifd-tls x2',
        'fresh qcow2: (ferry disk wire bytes - written) / virtual size',
      ]);
      const dir = /TLS credentials for QEMU \(openssl\), in (\S+)/.exec(r.stderr)?.[1];
      assert.equal(existsSync(dir!), false, `${dir} left behind`);
      assert.deepEqual(processesMentioning(dir!), []);
    });
  });
});
