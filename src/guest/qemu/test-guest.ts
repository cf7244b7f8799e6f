/**
 * ferry's own QEMU test guest (native/test-guest/test-guest.asm): where its image is, the
 * command line that configures it, and the lines it prints on its serial port. The guest fills its
 * memory with a checkable pattern, keeps rewriting a window of it and re-checks all of it, so a
 * QEMU guest can be shown to keep running across a live migration with its memory intact.
 */
import { fileURLToPath } from 'node:url';
import { FerryError } from '../../errors.js';

/**
 * The guest's image, for `qemu-system-x86_64 -kernel`. The same path from src/ and from dist/,
 * which lie at the same depth beside native/.
 */
export const TEST_GUEST_IMAGE = fileURLToPath(new URL('../../../native/test-guest/test-guest.bin', import.meta.url));

/** The format version of the guest's serial lines this module understands. */
export const TEST_GUEST_FORMAT = 1;

/** Guest physical address where the filled region begins. */
export const TEST_GUEST_BASE = 0x200000;

export const TEST_GUEST_PAGE = 4096;

/** The largest values the guest accepts. */
export const TEST_GUEST_LIMITS = { fillMiB: 4096, windowMiB: 4096, rateKiBps: 4194304, seed: 0xffffffff, diskMiB: 4096 } as const;

export interface TestGuestOptions {
  /** MiB to fill from 2 MiB up. Default: all the RAM below 4 GiB. 0: the guest writes no memory. */
  fillMiB?: number;
  /** MiB at the start of the filled region that are rewritten. Default 8. */
  windowMiB?: number;
  /** How fast the window is rewritten, in KiB/s. Default 'max'; 0 never rewrites. */
  rateKiBps?: number | 'max';
  /** Mixed into every word of the pattern. Default 0x6a09e667. */
  seed?: number;
  /**
   * MiB at the start of the first virtio-blk disk that the guest fills with the pattern, rewrites
   * (64 KiB each timer tick) and reads back; default 0, no disk I/O.
   */
  diskMiB?: number;
}

function integerIn(name: keyof typeof TEST_GUEST_LIMITS, value: number): number {
  const max = TEST_GUEST_LIMITS[name];
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new FerryError('ERR_FERRY_INPUT', `test guest: ${name} must be an integer from 0 to ${max} (got ${String(value)})`);
  }
  return value;
}

/** The `-append` text that gives the guest these options; options left out keep their defaults. */
export function testGuestAppend(options: TestGuestOptions = {}): string {
  const words: string[] = [];
  if (options.fillMiB !== undefined) words.push(`fill=${integerIn('fillMiB', options.fillMiB)}`);
  if (options.windowMiB !== undefined) words.push(`window=${integerIn('windowMiB', options.windowMiB)}`);
  if (options.rateKiBps !== undefined) {
    words.push(`rate=${options.rateKiBps === 'max' ? 'max' : integerIn('rateKiBps', options.rateKiBps)}`);
  }
  if (options.seed !== undefined) words.push(`seed=${integerIn('seed', options.seed).toString(16).padStart(8, '0')}`);
  if (options.diskMiB !== undefined) words.push(`disk=${integerIn('diskMiB', options.diskMiB)}`);
  return words.join(' ');
}

/** The first line: the parameters in effect and what the guest found. */
export interface TestGuestBoot {
  kind: 'boot';
  version: typeof TEST_GUEST_FORMAT;
  /** Whole MiB filled (pages / 256, rounded down). */
  fillMiB: number;
  windowMiB: number;
  rateKiBps: number | 'max';
  seed: number;
  /** Guest physical address of the first filled page. */
  base: number;
  /** Pages the guest fills. */
  pages: number;
  /** Pages of RAM the guest can reach (below 4 GiB, from the base up). */
  availPages: number;
  tscKHz: number;
}

export type TestGuestLine =
  | TestGuestBoot
  /** A parameter the guest did not understand and left alone. */
  | { kind: 'ignored'; token: string }
  /** The fill is done. */
  | { kind: 'filled'; pages: number; ms: number }
  /** About once a second: seconds since boot, window pages rewritten so far. */
  | { kind: 'tick'; seconds: number; dirtied: number }
  /** A sweep over every filled page: `bad` pages differed from what the guest last wrote. */
  | { kind: 'check'; sweep: number; ok: boolean; pages: number; bad: number }
  /** The first differing 32-bit word of a page (of a disk page: its offset on the disk). */
  | { kind: 'fail'; addr: number; want: number; got: number }
  /** disk=MiB: that much of the disk written with the pattern. */
  | { kind: 'disk-filled'; pages: number; ms: number }
  /** A sweep reading back every disk page: `bad` pages differed from what the guest last wrote. */
  | { kind: 'disk-check'; sweep: number; ok: boolean; pages: number; bad: number }
  /** The machine is wrong for the guest (an exception halts it). */
  | { kind: 'error'; message: string };

const DEC = '(\\d{1,16})';
const HEX = '([0-9a-f]{8})';
const LINES: readonly [RegExp, (m: string[]) => TestGuestLine][] = [
  [
    new RegExp(
      `^ferry-test-guest 1 fill=${DEC} window=${DEC} rate=(\\d{1,16}|max) seed=${HEX} base=0x${HEX} pages=${DEC} avail=${DEC} tsc=${DEC}$`,
    ),
    (m) => ({
      kind: 'boot',
      version: TEST_GUEST_FORMAT,
      fillMiB: decimal(m[1]!),
      windowMiB: decimal(m[2]!),
      rateKiBps: m[3] === 'max' ? 'max' : decimal(m[3]!),
      seed: hex(m[4]!),
      base: hex(m[5]!),
      pages: decimal(m[6]!),
      availPages: decimal(m[7]!),
      tscKHz: decimal(m[8]!),
    }),
  ],
  [/^ignored (\S+)$/, (m) => ({ kind: 'ignored', token: m[1]! })],
  [new RegExp(`^filled pages=${DEC} ms=${DEC}$`), (m) => ({ kind: 'filled', pages: decimal(m[1]!), ms: decimal(m[2]!) })],
  [new RegExp(`^tick ${DEC} dirtied=${DEC}$`), (m) => ({ kind: 'tick', seconds: decimal(m[1]!), dirtied: decimal(m[2]!) })],
  [
    new RegExp(`^check ${DEC} ok pages=${DEC}$`),
    (m) => ({ kind: 'check', sweep: decimal(m[1]!), ok: true, pages: decimal(m[2]!), bad: 0 }),
  ],
  [
    new RegExp(`^check ${DEC} failed pages=${DEC} bad=${DEC}$`),
    (m) => ({ kind: 'check', sweep: decimal(m[1]!), ok: false, pages: decimal(m[2]!), bad: decimal(m[3]!) }),
  ],
  [
    new RegExp(`^FAIL addr=0x${HEX} want=0x${HEX} got=0x${HEX}$`),
    (m) => ({ kind: 'fail', addr: hex(m[1]!), want: hex(m[2]!), got: hex(m[3]!) }),
  ],
  [new RegExp(`^disk filled pages=${DEC} ms=${DEC}$`), (m) => ({ kind: 'disk-filled', pages: decimal(m[1]!), ms: decimal(m[2]!) })],
  [
    new RegExp(`^disk check ${DEC} ok pages=${DEC}$`),
    (m) => ({ kind: 'disk-check', sweep: decimal(m[1]!), ok: true, pages: decimal(m[2]!), bad: 0 }),
  ],
  [
    new RegExp(`^disk check ${DEC} failed pages=${DEC} bad=${DEC}$`),
    (m) => ({ kind: 'disk-check', sweep: decimal(m[1]!), ok: false, pages: decimal(m[2]!), bad: decimal(m[3]!) }),
  ],
  [/^error (\S.*)$/, (m) => ({ kind: 'error', message: m[1]! })],
];

function decimal(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new FerryError('ERR_FERRY_FRAME', `test guest: number out of range: ${text}`);
  return n;
}

function hex(text: string): number {
  return Number.parseInt(text, 16);
}

function malformed(line: string): FerryError {
  const shown = line.length > 120 ? `${line.slice(0, 120)}...` : line;
  const version = /^ferry-test-guest (\d+) /.exec(line);
  const why =
    version && Number(version[1]) !== TEST_GUEST_FORMAT ? `format version ${version[1]} is not ${TEST_GUEST_FORMAT}` : 'malformed line';
  return new FerryError('ERR_FERRY_FRAME', `test guest: ${why}: ${JSON.stringify(shown)}`);
}

/** One serial line (its line ending optional) as a typed record; anything else is refused. */
export function parseTestGuestLine(line: string): TestGuestLine {
  const text = line.endsWith('\r\n') ? line.slice(0, -2) : line.endsWith('\n') || line.endsWith('\r') ? line.slice(0, -1) : line;
  for (const [pattern, build] of LINES) {
    const m = pattern.exec(text);
    if (m) return build(m);
  }
  throw malformed(text);
}

/**
 * Every complete line of a serial log, in order. Text after the last line ending is a line still
 * being written and is left for the next read.
 */
export function parseTestGuestLog(log: string): TestGuestLine[] {
  const end = log.lastIndexOf('\n');
  if (end < 0) return [];
  return log
    .slice(0, end)
    .split('\n')
    .map((line) => parseTestGuestLine(line));
}
