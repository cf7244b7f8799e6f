/**
 * ferry's QEMU test guest, booted by a real QEMU under TCG (skipped, saying why, without
 * qemu-system-x86_64): it fills and re-checks its memory, a guest told not to fill writes nothing,
 * and a byte changed behind its back is caught at its address. Guest RAM is a shared file, so the
 * test reads and changes the very memory the guest sees.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  existsSync,
  writeFileSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  truncateSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  parseTestGuestLine,
  parseTestGuestLog,
  TEST_GUEST_BASE,
  TEST_GUEST_IMAGE,
  TEST_GUEST_PAGE,
  testGuestAppend,
  type TestGuestBoot,
  type TestGuestLine,
} from '../../../src/guest/qemu/test-guest.js';
import { sleep } from '../../../src/common/async.js';

const QEMU = 'qemu-system-x86_64';
const root = fileURLToPath(new URL('../../../', import.meta.url));

function missing(command: string, args: string[]): string | null {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  if (r.error) return `${command} is not installed (${(r.error as NodeJS.ErrnoException).code})`;
  if (r.status !== 0) return `${command} ${args.join(' ')} exited ${r.status}`;
  return null;
}

function skipUnless(ctx: Mocha.Context, command: string, args: string[]): void {
  const why = missing(command, args);
  if (why) {
    console.log(`      skipped: ${why}`);
    ctx.skip();
  }
}

// The page format of the guest's header comment, written out again: the guest and this test must
// agree on it independently.
function fmix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

function patternWord(addr: number, seed: number, generation: number): number {
  if (addr % TEST_GUEST_PAGE === 0) return generation;
  const key = fmix32((Math.imul(generation, 0x9e3779b9) ^ seed) >>> 0);
  return fmix32((addr ^ key) >>> 0);
}

/** A QEMU running the test guest, its serial port in a file, its RAM in a shared file. */
class BootedGuest {
  private stderr = '';

  private constructor(
    readonly child: ChildProcess,
    readonly serial: string,
    readonly ram: string,
  ) {
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
  }

  static boot(dir: string, name: string, memoryMiB: number, append: string, machine = 'pc', extra: string[] = []): BootedGuest {
    const serial = path.join(dir, `${name}.serial`);
    const ram = path.join(dir, `${name}.ram`);
    const args = [
      '-machine',
      `${machine},memory-backend=ram`,
      '-object',
      `memory-backend-file,id=ram,size=${memoryMiB}M,mem-path=${ram},share=on`,
      '-accel',
      'tcg',
      '-m',
      `${memoryMiB}M`,
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-no-reboot',
      '-kernel',
      TEST_GUEST_IMAGE,
      '-append',
      append,
      '-chardev',
      `file,id=serial,path=${serial}`,
      '-serial',
      'chardev:serial',
      ...extra,
    ];
    return new BootedGuest(spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'] }), serial, ram);
  }

  lines(): TestGuestLine[] {
    return existsSync(this.serial) ? parseTestGuestLog(readFileSync(this.serial, 'latin1')) : [];
  }

  /** The serial lines once `done` holds for them. */
  async waitFor(what: string, done: (lines: TestGuestLine[]) => boolean, ms = 40_000): Promise<TestGuestLine[]> {
    const deadline = Date.now() + ms;
    for (;;) {
      const lines = this.lines();
      if (done(lines)) return lines;
      const ended = this.child.exitCode ?? this.child.signalCode;
      const tail = existsSync(this.serial) ? readFileSync(this.serial, 'latin1').slice(-600) : '(no serial output)';
      if (ended !== null) throw new Error(`QEMU ended (${ended}) before ${what}: ${this.stderr}\n${tail}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; serial:\n${tail}`);
      await sleep(100);
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const ended = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await ended;
    clearTimeout(timer);
  }

  readRam(addr: number, bytes: number): Buffer {
    const fd = openSync(this.ram, 'r');
    try {
      const b = Buffer.alloc(bytes);
      assert.equal(readSync(fd, b, 0, bytes, addr), bytes);
      return b;
    } finally {
      closeSync(fd);
    }
  }
}

const boot = (lines: TestGuestLine[]): TestGuestBoot | undefined => lines.find((l): l is TestGuestBoot => l.kind === 'boot');
const ticks = (lines: TestGuestLine[]) => lines.flatMap((l) => (l.kind === 'tick' ? [l] : []));
const checks = (lines: TestGuestLine[]) => lines.flatMap((l) => (l.kind === 'check' ? [l] : []));

/** The numbers of the pages in [from, to) of the RAM file that are not all zero. */
function nonZeroPages(guest: BootedGuest, from: number, to: number): number[] {
  const out: number[] = [];
  const chunk = 1 << 20;
  for (let at = from; at < to; at += chunk) {
    const b = guest.readRam(at, Math.min(chunk, to - at));
    for (let p = 0; p < b.length; p += TEST_GUEST_PAGE) {
      const page = b.subarray(p, p + TEST_GUEST_PAGE);
      if (page.some((x) => x !== 0)) out.push((at + p) / TEST_GUEST_PAGE);
    }
  }
  return out;
}

describe('QEMU test guest', function () {
  it('is checked in beside its source, where the helper says', function () {
    assert.equal(TEST_GUEST_IMAGE, path.join(root, 'native', 'test-guest', 'test-guest.bin'));
    const image = readFileSync(TEST_GUEST_IMAGE);
    assert.ok(image.length > 512 && image.length < 16384, `${image.length} bytes`);
    assert.equal(image.readUInt32LE(0), 0x1badb002, 'multiboot magic at the start');
    assert.equal((image.readUInt32LE(0) + image.readUInt32LE(4) + image.readUInt32LE(8)) >>> 0, 0, 'multiboot checksum');
  });

  it('builds its command line from typed options, refusing values the guest would ignore', function () {
    assert.equal(testGuestAppend(), '');
    assert.equal(testGuestAppend({ fillMiB: 64, windowMiB: 2, rateKiBps: 'max', seed: 0xab }), 'fill=64 window=2 rate=max seed=000000ab');
    assert.equal(testGuestAppend({ fillMiB: 0, rateKiBps: 0 }), 'fill=0 rate=0');
    assert.equal(testGuestAppend({ fillMiB: 8, diskMiB: 16 }), 'fill=8 disk=16');
    assert.throws(() => testGuestAppend({ diskMiB: 4097 }), /diskMiB must be an integer from 0 to 4096/);
    for (const bad of [
      { fillMiB: -1 },
      { fillMiB: 4097 },
      { windowMiB: 1.5 },
      { rateKiBps: 4194305 },
      { seed: 2 ** 32 },
      { fillMiB: NaN },
    ]) {
      assert.throws(
        () => testGuestAppend(bad),
        (e: { code?: string; message?: string }) => e.code === 'ERR_FERRY_INPUT' && /test guest: \w+ must be/.test(e.message!),
      );
    }
  });

  it('parses every kind of serial line and refuses anything else', function () {
    assert.deepEqual(
      parseTestGuestLine(
        'ferry-test-guest 1 fill=253 window=8 rate=max seed=6a09e667 base=0x00200000 pages=64992 avail=64992 tsc=2596203\r\n',
      ),
      {
        kind: 'boot',
        version: 1,
        fillMiB: 253,
        windowMiB: 8,
        rateKiBps: 'max',
        seed: 0x6a09e667,
        base: 0x200000,
        pages: 64992,
        availPages: 64992,
        tscKHz: 2596203,
      },
    );
    assert.equal(
      (
        parseTestGuestLine(
          'ferry-test-guest 1 fill=0 window=0 rate=4096 seed=00000000 base=0x00200000 pages=0 avail=9 tsc=1',
        ) as TestGuestBoot
      ).rateKiBps,
      4096,
    );
    assert.deepEqual(parseTestGuestLine('ignored colour=blue'), { kind: 'ignored', token: 'colour=blue' });
    assert.deepEqual(parseTestGuestLine('filled pages=16384 ms=295\n'), { kind: 'filled', pages: 16384, ms: 295 });
    assert.deepEqual(parseTestGuestLine('tick 3 dirtied=18446744073'), { kind: 'tick', seconds: 3, dirtied: 18446744073 });
    assert.deepEqual(parseTestGuestLine('check 2 ok pages=8192'), { kind: 'check', sweep: 2, ok: true, pages: 8192, bad: 0 });
    assert.deepEqual(parseTestGuestLine('check 16 failed pages=8192 bad=1'), { kind: 'check', sweep: 16, ok: false, pages: 8192, bad: 1 });
    assert.deepEqual(parseTestGuestLine('FAIL addr=0x01000120 want=0x37d8d474 got=0x77d8d474'), {
      kind: 'fail',
      addr: 0x1000120,
      want: 0x37d8d474,
      got: 0x77d8d474,
    });
    assert.deepEqual(parseTestGuestLine('error cpu exception 13'), { kind: 'error', message: 'cpu exception 13' });
    for (const bad of [
      '',
      'tick',
      'tick -1 dirtied=0',
      'tick 1 dirtied=0 extra',
      ' tick 1 dirtied=0',
      'tick 1\rdirtied=0',
      'check 1 ok pages=',
      'FAIL addr=0x1000120 want=0x37d8d474 got=0x77d8d474',
      'ferry-test-guest 2 fill=0 window=0 rate=max seed=6a09e667 base=0x00200000 pages=0 avail=0 tsc=1',
      'tick 99999999999999999 dirtied=0',
      'SeaBIOS (version 1.16.2)',
    ]) {
      assert.throws(
        () => parseTestGuestLine(bad),
        (e: { code?: string }) => e.code === 'ERR_FERRY_FRAME',
        JSON.stringify(bad),
      );
    }
    assert.throws(() => parseTestGuestLine('ferry-test-guest 2 x'), /format version 2 is not 1/);
    assert.deepEqual(parseTestGuestLine('disk filled pages=4096 ms=203\r\n'), { kind: 'disk-filled', pages: 4096, ms: 203 });
    assert.deepEqual(parseTestGuestLine('disk check 3 ok pages=4096'), { kind: 'disk-check', sweep: 3, ok: true, pages: 4096, bad: 0 });
    assert.deepEqual(parseTestGuestLine('disk check 9 failed pages=1024 bad=21'), {
      kind: 'disk-check',
      sweep: 9,
      ok: false,
      pages: 1024,
      bad: 21,
    });
    assert.deepEqual(parseTestGuestLine('error disk: no virtio-blk device'), { kind: 'error', message: 'disk: no virtio-blk device' });
    assert.throws(() => parseTestGuestLine('disk check x ok pages=1'), /malformed line/);
    assert.deepEqual(
      parseTestGuestLog('tick 1 dirtied=0\r\ntick 2 dirt'),
      [{ kind: 'tick', seconds: 1, dirtied: 0 }],
      'a partial last line waits',
    );
  });

  describe(`under ${QEMU} (TCG)`, function () {
    let dir: string;
    const guests: BootedGuest[] = [];
    const start = (name: string, memoryMiB: number, append: string, machine?: string, extra?: string[]) => {
      const g = BootedGuest.boot(dir, name, memoryMiB, append, machine, extra);
      guests.push(g);
      return g;
    };
    before(function () {
      skipUnless(this, QEMU, ['--version']);
      dir = mkdtempSync(path.join(tmpdir(), 'ferry-test-guest-'));
    });
    afterEach(async function () {
      await Promise.all(guests.splice(0).map((g) => g.stop()));
    });
    after(function () {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('fills all its memory with the documented pattern, rewrites its window, ticks and checks it intact', async function () {
      this.timeout(60_000);
      const seed = 0x1234abcd;
      const g = start('fill', 96, `${testGuestAppend({ seed })} colour=blue`);
      // A check sweep rewrites nothing: on a busy host one can span a tick, so the window shows as
      // rewritten between the first tick and the last, not between every two.
      const rewritten = (ls: TestGuestLine[]) => {
        const t = ticks(ls);
        return t.length >= 2 && t.at(-1)!.dirtied > t[0]!.dirtied;
      };
      const lines = await g.waitFor(
        'ticks after a check ok, the window rewritten between them',
        (ls) => checks(ls).some((c) => c.ok) && rewritten(ls),
      );
      const b = boot(lines)!;
      assert.ok(b, 'boot line first');
      assert.equal(lines[0], b);
      assert.equal(b.seed, seed);
      assert.equal(b.rateKiBps, 'max');
      assert.equal(b.base, TEST_GUEST_BASE);
      assert.ok(b.availPages > 90 * 256 && b.availPages < 94 * 256, `${b.availPages} pages of 96 MiB`);
      assert.equal(b.pages, b.availPages, 'fills everything by default');
      assert.equal(b.windowMiB, 8);
      assert.deepEqual(lines[1], { kind: 'ignored', token: 'colour=blue' });
      const filled = lines.find((l) => l.kind === 'filled');
      assert.deepEqual(filled && filled.kind === 'filled' && filled.pages, b.pages);
      assert.ok(lines.indexOf(filled!) < lines.indexOf(checks(lines)[0]!), 'checks follow the fill');
      assert.ok(checks(lines).every((c) => c.ok && c.bad === 0 && c.pages === b.pages));
      assert.ok(!lines.some((l) => l.kind === 'fail' || l.kind === 'error'));
      const t = ticks(lines);
      for (let i = 1; i < t.length; i++) {
        assert.ok(t[i]!.seconds > t[i - 1]!.seconds, 'ticks strictly increase');
        assert.ok(t[i]!.dirtied >= t[i - 1]!.dirtied, 'the count of rewritten pages never goes back');
      }
      // Every page past the window is still generation 0, word for word, in the RAM QEMU holds.
      const windowEnd = b.base + b.windowMiB * 2 ** 20;
      const end = b.base + b.pages * TEST_GUEST_PAGE;
      for (let at = windowEnd; at < end; at += 2 ** 20) {
        const chunk = g.readRam(at, Math.min(2 ** 20, end - at));
        for (let o = 0; o < chunk.length; o += 4) {
          const want = patternWord(at + o, seed, 0);
          if (chunk.readUInt32LE(o) !== want)
            assert.fail(`word at 0x${(at + o).toString(16)}: ${chunk.readUInt32LE(o).toString(16)} not ${want.toString(16)}`);
        }
      }
      // Window pages were rewritten in order, each to its header's generation: with QEMU stopped,
      // the first pages are one generation ahead of the rest and only the page being rewritten
      // when it stopped may be half old.
      g.child.kill('SIGSTOP');
      let window: Buffer;
      try {
        window = g.readRam(b.base, windowEnd - b.base);
      } finally {
        g.child.kill('SIGCONT');
      }
      const generations: number[] = [];
      const stale: number[] = [];
      for (let p = 0; p < window.length; p += TEST_GUEST_PAGE) {
        const generation = window.readUInt32LE(p);
        generations.push(generation);
        for (let o = 4; o < TEST_GUEST_PAGE; o += 4) {
          if (window.readUInt32LE(p + o) !== patternWord(b.base + p + o, seed, generation)) {
            stale.push(p / TEST_GUEST_PAGE);
            break;
          }
        }
      }
      const last = generations.at(-1)!;
      assert.ok(last >= 1, 'every window page rewritten');
      const ahead = generations.findIndex((x) => x === last);
      assert.ok(
        generations.every((x, i) => x === (i < ahead ? last + 1 : last)),
        `generations ${last + 1} then ${last}`,
      );
      assert.ok(
        stale.length <= 1 && stale.every((p) => p === ahead - 1),
        `${stale.length} pages differ from their generation, from page ${stale[0]}`,
      );
    });

    it('disk=4: fills the start of its virtio-blk disk with the pattern, re-checks it intact, and a page changed under it fails, named by its offset', async function () {
      this.timeout(60_000);
      const image = path.join(dir, 'disk.raw');
      writeFileSync(image, Buffer.alloc(0));
      truncateSync(image, 16 * 2 ** 20);
      const disk = ['-blockdev', `driver=file,filename=${image},node-name=f0`, '-blockdev', 'driver=raw,file=f0,node-name=d0'];
      const g = start('disk', 64, testGuestAppend({ fillMiB: 8, diskMiB: 4 }), 'pc', [...disk, '-device', 'virtio-blk-pci,drive=d0']);
      const diskChecks = (ls: TestGuestLine[]) => ls.filter((l) => l.kind === 'disk-check');
      const lines = await g.waitFor('two disk sweeps', (ls) => diskChecks(ls).length >= 2);
      const b = boot(lines)!;
      assert.deepEqual(
        lines.filter((l) => l.kind === 'disk-filled').map((l) => l.kind === 'disk-filled' && l.pages),
        [1024],
      );
      assert.ok(diskChecks(lines).every((c) => c.kind === 'disk-check' && c.ok && c.pages === 1024 && c.bad === 0));
      assert.ok(!lines.some((l) => l.kind === 'fail' || l.kind === 'error'), JSON.stringify(lines.filter((l) => l.kind !== 'check')));
      // On the disk itself: each page in the documented format, its generation in its header (one
      // chunk of 16 pages may be mid-rewrite), and nothing past the 4 MiB.
      const bytes = readFileSync(image);
      let inFlux = 0;
      for (let at = 0; at < 4 * 2 ** 20; at += TEST_GUEST_PAGE) {
        const generation = bytes.readUInt32LE(at);
        for (let o = 4; o < TEST_GUEST_PAGE; o += 4)
          if (bytes.readUInt32LE(at + o) !== patternWord(at + o, b.seed, generation)) {
            inFlux++;
            break;
          }
      }
      assert.ok(inFlux <= 16, `${inFlux} disk pages not in the pattern of their generation`);
      assert.ok(
        bytes.subarray(4 * 2 ** 20).every((x) => x === 0),
        'nothing written past disk=4',
      );
      // The first page of every chunk overwritten behind the guest's back: a later sweep fails.
      const fd = openSync(image, 'r+');
      try {
        for (let chunk = 0; chunk < 64; chunk++) writeSync(fd, Buffer.alloc(TEST_GUEST_PAGE, 0x55), 0, TEST_GUEST_PAGE, chunk * 2 ** 16);
      } finally {
        closeSync(fd);
      }
      const after = await g.waitFor('a failed disk sweep', (ls) => diskChecks(ls).some((c) => c.kind === 'disk-check' && !c.ok));
      const failed = diskChecks(after).find((c) => c.kind === 'disk-check' && !c.ok)!;
      assert.ok(failed.kind === 'disk-check' && failed.bad > 0 && failed.bad <= 64, JSON.stringify(failed));
      const fails = after.filter((l) => l.kind === 'fail');
      assert.ok(fails.length > 0);
      for (const f of fails) {
        assert.ok(
          f.kind === 'fail' && f.addr % 2 ** 16 === 0 && f.addr < 4 * 2 ** 20,
          `FAIL at 0x${f.kind === 'fail' && f.addr.toString(16)}`,
        );
        assert.ok(f.kind === 'fail' && f.got === 0x55555555);
      }
    });

    it('with fill=0 writes no memory and keeps ticking', async function () {
      this.timeout(60_000);
      const g = start('idle', 64, testGuestAppend({ fillMiB: 0 }));
      const first = await g.waitFor('the boot line', (ls) => boot(ls) !== undefined);
      const b = boot(first)!;
      assert.equal(b.pages, 0);
      const top = b.base + b.availPages * TEST_GUEST_PAGE;
      // The firmware left some pages behind before the guest started; none may change after.
      const leftBehind = nonZeroPages(g, b.base, top);
      const before = g.readRam(b.base, top - b.base);
      const lines = await g.waitFor('three ticks', (ls) => ticks(ls).length >= 3);
      assert.ok(leftBehind.length < 64, `${leftBehind.length} pages written before the guest ran`);
      for (const page of leftBehind) {
        const addr = page * TEST_GUEST_PAGE;
        assert.notEqual(
          g.readRam(addr + 4, 4).readUInt32LE(0),
          patternWord(addr + 4, b.seed, 0),
          `page 0x${addr.toString(16)} is the guest's`,
        );
      }
      assert.ok(g.readRam(b.base, top - b.base).equals(before), 'the guest wrote memory');
      assert.deepEqual(
        lines.find((l) => l.kind === 'filled'),
        { kind: 'filled', pages: 0, ms: 0 },
      );
      assert.ok(
        ticks(lines).every((t) => t.dirtied === 0),
        'nothing rewritten',
      );
      assert.equal(checks(lines).length, 0, 'nothing to check');
    });

    it('reports FAIL at the address of a byte changed behind its back, and rewrites at the rate asked', async function () {
      this.timeout(60_000);
      const g = start('flip', 64, testGuestAppend({ fillMiB: 32, windowMiB: 1, rateKiBps: 2048 }));
      const before = await g.waitFor('a check ok', (ls) => checks(ls).some((c) => c.ok));
      const b = boot(before)!;
      const addr = b.base + 20 * 2 ** 20 + 0x123; // past the window, inside the fill
      const word = addr & ~3;
      const want = patternWord(word, b.seed, 0);
      assert.equal(g.readRam(word, 4).readUInt32LE(0), want, 'the page holds the pattern');
      const fd = openSync(g.ram, 'r+');
      try {
        const byte = Buffer.alloc(1);
        readSync(fd, byte, 0, 1, addr);
        byte[0] = byte[0]! ^ 0x40;
        writeSync(fd, byte, 0, 1, addr);
      } finally {
        closeSync(fd);
      }
      const got = g.readRam(word, 4).readUInt32LE(0);
      const lines = await g.waitFor('the FAIL line and a failed check', (ls) => checks(ls).some((c) => !c.ok) && ticks(ls).length >= 4);
      const fails = lines.filter((l) => l.kind === 'fail');
      assert.deepEqual(fails[0], { kind: 'fail', addr: word, want, got });
      assert.ok(
        fails.every((f) => f.kind === 'fail' && f.addr === word),
        'only that word',
      );
      const failed = checks(lines).filter((c) => !c.ok);
      assert.ok(failed.every((c) => c.bad === 1 && c.pages === b.pages));
      // 2048 KiB/s is 512 pages a second: judged over the whole run, generously (TCG on a busy host)
      const t = ticks(lines);
      const perSecond = (t.at(-1)!.dirtied - t[0]!.dirtied) / (t.at(-1)!.seconds - t[0]!.seconds);
      assert.ok(perSecond > 256 && perSecond < 640, `${perSecond} pages/s rewritten at 2048 KiB/s`);
    });

    it('boots on q35', async function () {
      this.timeout(60_000);
      const g = start('q35', 64, testGuestAppend({ fillMiB: 16 }), 'q35');
      const lines = await g.waitFor('a check ok and a tick', (ls) => checks(ls).some((c) => c.ok) && ticks(ls).length >= 1);
      assert.equal(boot(lines)!.pages, 16 * 256);
    });
  });

  describe('rebuild with nasm', function () {
    const script = path.join(root, 'scripts', 'build-test-guest.mjs');
    before(function () {
      skipUnless(this, 'nasm', ['-v']);
    });

    it('gives the checked-in image byte for byte, and --check tells a changed one', function () {
      const ok = spawnSync(process.execPath, [script, '--check'], { encoding: 'utf8' });
      assert.equal(ok.status, 0, ok.stderr);
      const dir = mkdtempSync(path.join(tmpdir(), 'ferry-test-guest-build-'));
      try {
        const copy = path.join(dir, 'changed.bin');
        copyFileSync(TEST_GUEST_IMAGE, copy);
        const changed = readFileSync(copy);
        changed[100] = changed[100]! ^ 1;
        writeFileSync(copy, changed);
        const bad = spawnSync(process.execPath, [script, '--check', '--image', copy], { encoding: 'utf8' });
        assert.equal(bad.status, 1);
        assert.match(bad.stderr, /differs from a fresh build \(\d+ bytes\) from byte 100;/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
