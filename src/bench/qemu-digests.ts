/**
 * `ferry bench qemu-digests`: QEMU's own live migration, no ferry in between, checked the way
 * `--verify` checks ferry's: ferry's test guest (its memory filled, a window of it rewritten
 * without end) moved by QEMU alone over loopback TCP with QEMU's bandwidth cap, then the RAM
 * digests of the two paused copies compared, and on a difference the pages that differ. It says
 * whether a QEMU binary moves this guest intact on this host, apart from anything ferry does
 * (docs/qemu.md, "What `--verify` checks").
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Argv } from 'yargs';
import { FerryError } from '../errors.js';
import { sleep } from '../common/async.js';
import { writeFileAtomic } from '../common/atomic-file.js';
import { formatBytes, parseRate } from '../common/units.js';
import { defineCommand, type GlobalArgs } from '../cli/command.js';
import { createQemu } from '../guest/qemu/create.js';
import { Qemu } from '../guest/qemu/hypervisor.js';
import { probeQemu } from '../guest/qemu/probe.js';
import { ramDigest } from '../guest/qemu/ram-digest.js';
import { testGuestAppend } from '../guest/qemu/test-guest.js';
import { describeMachine, versionLine } from './machine.js';
import { migrateByQemu } from './qemu-migration.js';
import { copyBootFiles, SETTLE_MS, waitForFill } from './qemu-guest.js';
import { qemuBinaries } from './qemu.js';

const MiB = 2 ** 20;
const MEMORY_BYTES = 64 * MiB;
const FILL_MIB = 60;
const WINDOW_MIB = 8;
const FILL_TIMEOUT_MS = 120_000;
const PAGE = 4096;
const LISTED_PAGES = 16;

interface Round {
  round: number;
  ok: boolean;
  /** null when the move itself failed (`error`). */
  equal: boolean | null;
  totalMs: number | null;
  downtimeMs: number | null;
  ramBytes: number | null;
  /** Guest-physical addresses of the first differing pages (hex), and how many differ. */
  differingPages: { count: number; first: string[] } | null;
  error: string | null;
}

interface BinaryReport {
  binary: string;
  version: string | null;
  accel: string | null;
  skipped: string | null;
  rounds: Round[];
  equal: number;
  differ: number;
}

/** The pages that differ between two pmemsave images of the same size. */
function differingPages(a: Buffer, b: Buffer): { count: number; first: string[] } {
  const first: string[] = [];
  let count = 0;
  for (let at = 0; at < a.length; at += PAGE) {
    if (a.subarray(at, at + PAGE).equals(b.subarray(at, at + PAGE))) continue;
    count++;
    if (first.length < LISTED_PAGES) first.push(`0x${at.toString(16)}`);
  }
  return { count, first };
}

/** One fresh guest moved once by QEMU alone; both copies paused at the end, their RAM compared. */
async function oneRound(root: string, round: number, accel: 'kvm' | 'tcg', bandwidth: number): Promise<Round> {
  const srcDir = path.join(root, `r${round}-source`);
  const dstDir = path.join(root, `r${round}-destination`);
  mkdirSync(srcDir, { recursive: true, mode: 0o700 });
  const append = testGuestAppend({ fillMiB: FILL_MIB, windowMiB: WINDOW_MIB, rateKiBps: 'max' });
  const request = { name: 'digests', driver: 'qemu', memoryBytes: MEMORY_BYTES, cpus: 1, accel, append } as const;
  const config = await createQemu({ ...request, nic: 'virtio', encryptedMigration: 'opportunistic' }, srcDir);
  const started: Qemu[] = [];
  const result: Round = {
    round,
    ok: false,
    equal: null,
    totalMs: null,
    downtimeMs: null,
    ramBytes: null,
    differingPages: null,
    error: null,
  };
  try {
    const source = await Qemu.start(config, srcDir);
    started.push(source);
    await waitForFill(srcDir, () => {}, FILL_TIMEOUT_MS);
    await sleep(SETTLE_MS);
    copyBootFiles(config, srcDir, dstDir);
    const destination = await Qemu.start(config, dstDir, { incoming: true });
    started.push(destination);
    const move = await migrateByQemu(source.qmp, destination.qmp, { mode: 'plain', maxBandwidth: bandwidth, autoConverge: true });
    result.totalMs = move.info.totalTimeMs ?? null;
    result.downtimeMs = move.info.downtimeMs ?? null;
    result.ramBytes = move.info.ram?.transferred ?? null;
    const [a, b] = [await ramDigest(source.qmp, srcDir, MEMORY_BYTES), await ramDigest(destination.qmp, dstDir, MEMORY_BYTES)];
    result.ok = true;
    result.equal = a === b;
    if (!result.equal) {
      const images = [path.join(srcDir, 'ram.img'), path.join(dstDir, 'ram.img')] as const;
      await source.qmp.execute('pmemsave', { val: 0, size: MEMORY_BYTES, filename: images[0] });
      await destination.qmp.execute('pmemsave', { val: 0, size: MEMORY_BYTES, filename: images[1] });
      result.differingPages = differingPages(readFileSync(images[0]), readFileSync(images[1]));
    }
  } catch (err) {
    result.error = (err as Error).message;
  } finally {
    for (const q of started) await q.kill().catch(() => {});
    rmSync(srcDir, { recursive: true, force: true });
    rmSync(dstDir, { recursive: true, force: true });
  }
  return result;
}

async function benchBinary(
  root: string,
  binary: string,
  rounds: number,
  bandwidth: number,
  progress: (line: string) => void,
): Promise<BinaryReport> {
  const report: BinaryReport = { binary, version: versionLine(binary), accel: null, skipped: null, rounds: [], equal: 0, differ: 0 };
  const probe = await probeQemu({ env: process.env });
  if (probe.missing || !probe.chosen) {
    report.skipped = probe.missing ?? `QEMU ${probe.version} runs no guest here: ${probe.accelerators.tcg.reason}`;
    progress(`${binary}: skipped: ${report.skipped}`);
    return report;
  }
  report.accel = probe.chosen;
  for (let round = 1; round <= rounds; round++) {
    const r = await oneRound(root, round, probe.chosen, bandwidth);
    report.rounds.push(r);
    if (r.equal === true) report.equal++;
    if (r.equal === false) report.differ++;
    const how = r.error
      ? `the move failed: ${r.error}`
      : `${r.totalMs} ms, downtime ${r.downtimeMs} ms, ${formatBytes(r.ramBytes ?? 0)} of RAM sent: digests ${r.equal ? 'equal' : `DIFFER in ${r.differingPages!.count} pages (${r.differingPages!.first.join(' ')})`}`;
    progress(`${report.version ?? binary} (${probe.chosen}), round ${round}: ${how}`);
  }
  return report;
}

interface DigestsArgs extends GlobalArgs {
  rounds: number;
  bandwidth: string;
  qemu?: string[];
  out?: string;
}

export const benchQemuDigestsCommand = defineCommand<DigestsArgs>({
  command: 'qemu-digests',
  describe: "QEMU's own migration, no ferry: do the two paused copies' RAM digests agree?",
  builder: (y: Argv<GlobalArgs>) =>
    y
      .option('rounds', { type: 'number', default: 3, describe: 'moves per QEMU, each of a freshly booted guest' })
      .option('bandwidth', { type: 'string', default: '20MB', describe: "QEMU's max-bandwidth for the move, a second" })
      .option('qemu', {
        type: 'string',
        array: true,
        describe: 'a QEMU binary to check (repeatable; default: the one ferry uses, plus QEMU 10.0 where present)',
      })
      .option('out', { type: 'string', describe: 'also write the result, as --json prints it, to this file' })
      .example('$0 bench qemu-digests', 'three capped moves by each QEMU found; the pages that differ, if any')
      .example('$0 bench qemu-digests --qemu /usr/bin/qemu-system-x86_64 --rounds 1 --json', 'one move, the result as JSON'),
  run: async (output, args) => {
    if (!Number.isInteger(args.rounds) || args.rounds < 1 || args.rounds > 20)
      throw new FerryError('ERR_FERRY_USAGE', '--rounds must be 1 to 20');
    const bandwidth = parseRate(args.bandwidth, '--bandwidth');
    if (bandwidth < MiB) throw new FerryError('ERR_FERRY_USAGE', '--bandwidth must be at least 1MB a second');
    const { binaries, missing } = qemuBinaries(args.qemu);
    const progress = (line: string) => output.err.write(`${line}\n`);
    const command = ['ferry', ...process.argv.slice(2)].join(' ');
    const startedAt = new Date().toISOString();
    const reports: BinaryReport[] = [];
    if (missing) progress(`skipped: ${missing}`);
    const root = mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-qemu-digests-'));
    const productQemu = process.env.FERRY_QEMU;
    try {
      for (const binary of binaries) {
        // The QEMUs this process starts find QEMU the product's way.
        process.env.FERRY_QEMU = binary;
        reports.push(await benchBinary(root, binary, args.rounds, bandwidth, progress));
      }
    } finally {
      if (productQemu === undefined) delete process.env.FERRY_QEMU;
      else process.env.FERRY_QEMU = productQemu;
      rmSync(root, { recursive: true, force: true });
    }
    const result = {
      type: 'result',
      ok: true,
      subject: 'qemu-digests',
      command,
      startedAt,
      finishedAt: new Date().toISOString(),
      skipped: missing,
      settings: { rounds: args.rounds, bandwidth, memoryBytes: MEMORY_BYTES, fillMiB: FILL_MIB, windowMiB: WINDOW_MIB },
      machine: describeMachine(),
      qemus: reports,
    };
    if (args.out) await writeFileAtomic(args.out, `${JSON.stringify(result)}\n`, 0o644);
    output.emit(result);
    for (const r of reports) {
      if (r.skipped) output.print(`${r.binary}: skipped (${r.skipped})`);
      else
        output.print(
          `${r.version ?? r.binary} (${r.accel}): ${r.equal} of ${r.rounds.length} moves with equal RAM digests, ${r.differ} differing`,
        );
    }
    if (args.out) output.info(`result written to ${args.out}`);
  },
});
