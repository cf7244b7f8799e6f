/**
 * The QEMU probe on this machine (printed, so a run shows what this host's QEMU and KVM can do),
 * its answers for a missing or broken QEMU and an unusable /dev/kvm, and its hand-assembled guest
 * checked against an assembler.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sleep } from '../../../src/common/async.js';
import { processAlive, processesMentioning, waitProcessGone } from '../../../src/common/process.js';
import { QmpClient } from '../../../src/guest/qemu/qmp.js';
import { biosImage, probeQemu, resolveQemu } from '../../../src/guest/qemu/probe.js';
import { waitUntil } from '../../support/wait.js';

describe('QEMU probe', function () {
  this.timeout(60_000);
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-probe-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe('with QEMU', function () {
    before(function () {
      const qemu = resolveQemu();
      if (!qemu.executable) {
        console.log(`      skipped: ${qemu.missing}`);
        this.skip();
      }
    });

    it('says what this machine can do: version, machine types, and KVM only when it is not slower than TCG', async () => {
      const r = await probeQemu({ machineTypes: ['pc', 'pc-i440fx-7.2', 'no-such-machine-1.0'] });
      console.log(`      ${JSON.stringify(r)}`);
      assert.equal(r.missing, null);
      assert.match(r.version ?? '', /^\d+\.\d+\.\d+$/);
      assert.deepEqual(r.machineTypes, { pc: true, 'pc-i440fx-7.2': true, 'no-such-machine-1.0': false });
      const { tcg, kvm } = r.accelerators;
      assert.ok(tcg.usable && tcg.rate !== null && tcg.rate > 0, tcg.reason);
      if (kvm.usable) assert.ok(kvm.rate !== null && kvm.rate >= tcg.rate, kvm.reason);
      else assert.ok(kvm.rate === null || kvm.rate < tcg.rate, `${kvm.reason}: not used though as fast as TCG`);
      assert.equal(r.chosen, kvm.usable ? 'kvm' : 'tcg');
    });

    it('reports the version QEMU itself announces', async () => {
      const r = await probeQemu({ windowMs: 100, kvmDevice: path.join(dir, 'no-kvm') });
      const text = spawnSync(resolveQemu().executable!, ['--version'], { encoding: 'utf8' }).stdout;
      assert.ok(text.includes(`version ${r.version}`), `${r.version} vs ${text}`);
    });

    it('does not try KVM without a /dev/kvm it can open, and runs on TCG', async () => {
      const r = await probeQemu({ windowMs: 200, kvmDevice: path.join(dir, 'no-kvm') });
      assert.deepEqual(r.accelerators.kvm, { usable: false, reason: `${path.join(dir, 'no-kvm')} cannot be opened (ENOENT)`, rate: null });
      assert.equal(r.chosen, 'tcg');
    });

    it('kills the QEMU a probe killed mid-way left behind, and removes its directory, at the next probe', async () => {
      // A process probing (the compiled probe, as an agent runs it), SIGKILLed while its QEMU runs.
      const probe = new URL('../../../dist/guest/qemu/probe.js', import.meta.url).href;
      const child = spawn(process.execPath, ['-e', `import(${JSON.stringify(probe)}).then((m) => m.probeQemu({ windowMs: 60000 }))`], {
        stdio: 'ignore',
      });
      const mark = path.join(tmpdir(), `ferry-qemu-probe-${child.pid}-`);
      let left: number[] = [];
      await waitUntil(async () => (left = processesMentioning(mark)).length > 0, 20_000, 'the probe to start QEMU');
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      await sleep(200);
      assert.ok(left.every(processAlive), 'QEMU outlived the probe that started it');
      const r = await probeQemu({ windowMs: 100, kvmDevice: path.join(dir, 'no-kvm') });
      assert.deepEqual([...r.reaped].sort(), [...left].sort());
      for (const pid of left) assert.ok(await waitProcessGone(pid, 5000), `QEMU ${pid} is gone`);
      assert.deepEqual(
        readdirSync(tmpdir()).filter((n) => n.startsWith(`ferry-qemu-probe-${child.pid}-`)),
        [],
        'its directory is removed',
      );
    });

    it('runs a guest that writes to its serial port once every 2^20 loops', async () => {
      // The image the probe boots, run for a moment under TCG; the bytes must be the loop's.
      const bios = path.join(dir, 'loop.bin');
      writeFileSync(bios, biosImage());
      const qmpPath = path.join(dir, 'loop.qmp');
      const child = spawn(
        resolveQemu().executable!,
        [
          '-S',
          '-nodefaults',
          '-display',
          'none',
          '-machine',
          'pc',
          '-m',
          '16',
          '-bios',
          bios,
          '-accel',
          'tcg',
          '-serial',
          'stdio',
          '-qmp',
          `unix:${qmpPath},server=on,wait=off`,
        ],
        { stdio: ['pipe', 'pipe', 'inherit'] },
      );
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (t: string) => (out += t));
      const qmp = await QmpClient.connect(qmpPath);
      try {
        await qmp.cont();
        for (const until = Date.now() + 20_000; out.length < 3 && Date.now() < until;) await new Promise((r) => setTimeout(r, 20));
        assert.match(out, /^\.{3,}$/);
      } finally {
        await qmp.quit();
      }
    });
  });

  it('matches the hand assembly of its guest against nasm', function () {
    const nasm = spawnSync('nasm', ['-v']);
    if (nasm.error) {
      console.log('      skipped: nasm is not installed (apt-get install nasm)');
      this.skip();
    }
    const source = path.join(dir, 'loop.asm');
    writeFileSync(
      source,
      [
        'bits 16',
        'org 0',
        'cli',
        'mov dx, 0x3f8',
        "mov al, '.'",
        'outer: mov ecx, 1 << 20',
        'inner: dec ecx',
        'jnz inner',
        'out dx, al',
        'jmp outer',
        'times 0xfff0 - ($ - $$) db 0',
        'jmp 0xf000:0x0000',
        'times 0x10000 - ($ - $$) db 0',
        '',
      ].join('\n'),
    );
    const r = spawnSync('nasm', ['-f', 'bin', '-o', path.join(dir, 'loop-nasm.bin'), source], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(readFileSync(path.join(dir, 'loop-nasm.bin')).equals(biosImage()));
  });

  it('says QEMU is missing instead of throwing: not on PATH, or FERRY_QEMU not executable', async () => {
    const none = await probeQemu({ env: { PATH: path.join(dir, 'empty') }, machineTypes: ['pc'] });
    assert.deepEqual(none, {
      binary: 'qemu-system-x86_64',
      missing: 'qemu-system-x86_64 is not installed (not found on PATH)',
      version: null,
      accelerators: {
        kvm: { usable: false, reason: 'qemu-system-x86_64 is not installed (not found on PATH)', rate: null },
        tcg: { usable: false, reason: 'qemu-system-x86_64 is not installed (not found on PATH)', rate: null },
      },
      chosen: null,
      machineTypes: { pc: false },
      reaped: [],
    });
    const notExecutable = path.join(dir, 'qemu.txt');
    writeFileSync(notExecutable, 'not a program');
    const bad = await probeQemu({ env: { FERRY_QEMU: notExecutable, PATH: process.env.PATH } });
    assert.equal(bad.missing, `FERRY_QEMU=${notExecutable} is not an executable file`);
    assert.equal(bad.chosen, null);
  });

  it('says a QEMU that does not start is missing, with its own words why', async () => {
    const broken = path.join(dir, 'broken-qemu');
    writeFileSync(broken, '#!/bin/sh\necho "qemu-system-x86_64: could not load PC BIOS" >&2\nexit 1\n');
    chmodSync(broken, 0o755);
    const r = await probeQemu({ env: { FERRY_QEMU: broken, PATH: process.env.PATH }, kvmDevice: path.join(dir, 'no-kvm') });
    assert.equal(r.version, null);
    assert.equal(r.chosen, null);
    assert.equal(r.accelerators.tcg.usable, false);
    assert.match(r.accelerators.tcg.reason, /QEMU exited \(status 1\): qemu-system-x86_64: could not load PC BIOS/);
    assert.match(r.missing ?? '', /did not start: QEMU exited/);
  });
});
