/**
 * What this host's QEMU can do: which binary, its version, which of the machine types ferry pins
 * it has, and which accelerator to run guests on.
 *
 * KVM is chosen only where it runs guest code at least as fast as TCG. A /dev/kvm that opens is
 * not enough: a nested KVM may refuse `-cpu host` and emulate guest code far slower than TCG
 * translates it. So the probe runs the same tiny guest under each accelerator for a fixed window
 * and compares how far each got. The guest is 19 bytes of real-mode code (GUEST_CODE) in a 64 KiB
 * `-bios` image: no firmware, no kernel, nothing to download, and it needs no paging, which a
 * working KVM runs at the host CPU's speed and a crippled one does not.
 *
 * The probe never throws for a QEMU that is missing or broken: it says so in its result.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { processAlive, processesMentioning } from '../../common/process.js';
import { QmpClient } from './qmp.js';

export const DEFAULT_QEMU_BINARY = 'qemu-system-x86_64';

/** How long QEMU may take to come up, and to answer a command, before the probe gives up on it. */
const START_TIMEOUT_MS = 5000;
const COMMAND_TIMEOUT_MS = 3000;

/** Loop iterations between two bytes the guest writes to its serial port. */
const LOOPS_PER_BYTE = 1 << 20;

/**
 * The guest, hand-assembled (16-bit real mode; it starts at F000:0000, where the reset vector's
 * far jump below sends the CPU):
 *
 *   00  FA                 cli
 *   01  BA F8 03           mov dx, 0x3f8          ; COM1's data register
 *   04  B0 2E              mov al, '.'
 *   06  66 B9 00 00 10 00  outer: mov ecx, 1<<20  ; LOOPS_PER_BYTE
 *   0C  66 49              inner: dec ecx
 *   0E  75 FC              jnz inner               ; rel8 -4
 *   10  EE                 out dx, al             ; one byte a batch
 *   11  EB F3              jmp outer              ; rel8 -13
 *
 * A batch of 2^20 loops makes the port write (a VM exit under KVM) negligible next to the loop.
 */
const GUEST_CODE = Buffer.from([
  0xfa, 0xba, 0xf8, 0x03, 0xb0, 0x2e, 0x66, 0xb9, 0x00, 0x00, 0x10, 0x00, 0x66, 0x49, 0x75, 0xfc, 0xee, 0xeb, 0xf3,
]);
/** At F000:FFF0, the reset vector: `jmp far F000:0000` (EA offset16 segment16). */
const RESET_JUMP = Buffer.from([0xea, 0x00, 0x00, 0x00, 0xf0]);
/** QEMU maps a BIOS image of up to 128 KiB just below 1 MiB; 64 KiB puts its start at F000:0000. */
const BIOS_BYTES = 64 * 1024;

export type Accelerator = 'kvm' | 'tcg';

export interface AcceleratorProbe {
  usable: boolean;
  /** Why it is usable or not, in a sentence. */
  reason: string;
  /** Guest loop iterations a second it reached; null when the guest did not run. */
  rate: number | null;
}

export interface QemuProbe {
  /** The binary asked for: FERRY_QEMU, or qemu-system-x86_64 found on PATH. */
  binary: string;
  /** Null when QEMU is there; otherwise why it cannot be used. */
  missing: string | null;
  /** `major.minor.micro`, from QEMU's QMP greeting; null when no QEMU started. */
  version: string | null;
  accelerators: Record<Accelerator, AcceleratorProbe>;
  /** What guests should run on; null only when neither accelerator works. */
  chosen: Accelerator | null;
  /** For each machine type asked about: whether this QEMU has it (by name or alias). */
  machineTypes: Record<string, boolean>;
  /** QEMUs of earlier probes whose process was killed mid-probe, killed now (their directories removed). */
  reaped: number[];
}

export interface ProbeOptions {
  /** Machine types ferry pins, e.g. `pc-i440fx-7.2`. */
  machineTypes?: string[];
  /** How long each accelerator runs the guest. */
  windowMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Where /dev/kvm is (tests point it elsewhere). */
  kvmDevice?: string;
}

/** Runs the probe: a few seconds (two QEMU starts and a window of guest code each). */
export async function probeQemu(options: ProbeOptions = {}): Promise<QemuProbe> {
  const env = options.env ?? process.env;
  const windowMs = options.windowMs ?? 1000;
  const wanted = options.machineTypes ?? [];
  const { binary, executable, missing } = resolveQemu(env);
  const result: QemuProbe = {
    binary,
    missing,
    version: null,
    accelerators: { kvm: notRun('not tried'), tcg: notRun('not tried') },
    chosen: null,
    machineTypes: Object.fromEntries(wanted.map((m) => [m, false])),
    reaped: reapLeftProbes(),
  };
  if (!executable) {
    result.accelerators = { kvm: notRun(missing!), tcg: notRun(missing!) };
    return result;
  }

  // Named for this process: a probe killed mid-way leaves its QEMU, which the next probe reaps.
  const dir = mkdtempSync(path.join(tmpdir(), `${PROBE_DIR_PREFIX}${process.pid}-`));
  try {
    const bios = path.join(dir, 'loop.bin');
    writeFileSync(bios, biosImage(), { mode: 0o600 });
    // One after the other: run side by side they would share the cores and slow each other.
    const tcg = await runGuest(executable, 'tcg', dir, bios, windowMs, wanted);
    result.accelerators.tcg = tcg.probe;
    result.version = tcg.version;
    for (const [name, has] of Object.entries(tcg.machineTypes)) result.machineTypes[name] = has;

    const kvmDevice = options.kvmDevice ?? '/dev/kvm';
    const kvmUnavailable = cannotOpen(kvmDevice);
    if (kvmUnavailable) {
      result.accelerators.kvm = notRun(kvmUnavailable);
    } else {
      const kvm = await runGuest(executable, 'kvm', dir, bios, windowMs, tcg.version ? [] : wanted);
      result.version ??= kvm.version;
      if (!tcg.version) for (const [name, has] of Object.entries(kvm.machineTypes)) result.machineTypes[name] = has;
      result.accelerators.kvm = judgeKvm(kvm.probe, tcg.probe);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (!result.version) result.missing = `${binary} did not start: ${result.accelerators.tcg.reason}`;
  result.chosen = result.accelerators.kvm.usable ? 'kvm' : result.accelerators.tcg.usable ? 'tcg' : null;
  return result;
}

const PROBE_DIR_PREFIX = 'ferry-qemu-probe-';

/**
 * A probe whose process was killed (an agent SIGKILLed while it starts) leaves its QEMU behind,
 * paused or looping, reparented and never stopped, and its directory: the QEMUs of every probe
 * directory whose process is gone are killed and the directories removed. Returns the pids killed.
 */
export function reapLeftProbes(root = tmpdir()): number[] {
  const killed: number[] = [];
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return killed;
  }
  for (const name of names) {
    const owner = new RegExp(`^${PROBE_DIR_PREFIX}(\\d+)-`).exec(name);
    if (!owner || processAlive(Number(owner[1]))) continue;
    const dir = path.join(root, name);
    for (const pid of processesMentioning(`${dir}/`)) {
      if (!isQemu(pid)) continue;
      try {
        process.kill(pid, 'SIGKILL');
        killed.push(pid);
      } catch {
        // gone meanwhile, or not ours to kill
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
  return killed;
}

function isQemu(pid: number): boolean {
  try {
    return /qemu/.test(path.basename(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!));
  } catch {
    return false;
  }
}

/** The QEMU binary to use (FERRY_QEMU, else qemu-system-x86_64 on PATH), and why not when it is missing. */
export function resolveQemu(env: NodeJS.ProcessEnv = process.env): { binary: string; executable: string | null; missing: string | null } {
  const binary = env.FERRY_QEMU || DEFAULT_QEMU_BINARY;
  const executable = findExecutable(binary, env.PATH ?? '');
  if (executable) return { binary, executable, missing: null };
  const missing = env.FERRY_QEMU ? `FERRY_QEMU=${binary} is not an executable file` : `${binary} is not installed (not found on PATH)`;
  return { binary, executable, missing };
}

/** The 64 KiB `-bios` image: the loop at its start, the jump to it at the reset vector. */
export function biosImage(): Buffer {
  const image = Buffer.alloc(BIOS_BYTES);
  GUEST_CODE.copy(image, 0);
  RESET_JUMP.copy(image, BIOS_BYTES - 16);
  return image;
}

function judgeKvm(kvm: AcceleratorProbe, tcg: AcceleratorProbe): AcceleratorProbe {
  if (kvm.rate === null) return kvm;
  if (tcg.rate === null) return { ...kvm, usable: kvm.rate > 0, reason: `${kvm.reason}; TCG did not run to compare` };
  if (kvm.rate >= tcg.rate) return { ...kvm, usable: true, reason: `${kvm.reason}, TCG at ${loopRate(tcg.rate)}` };
  return { ...kvm, usable: false, reason: `slower than TCG (a nested or emulating KVM): ${kvm.reason}, TCG at ${loopRate(tcg.rate)}` };
}

function loopRate(rate: number): string {
  return `${(rate / 1e6).toFixed(1)}M loops/s`;
}

interface GuestRun {
  probe: AcceleratorProbe;
  version: string | null;
  machineTypes: Record<string, boolean>;
}

/**
 * Starts QEMU paused (-S) on the guest, asks it what it needs to over QMP, resumes it and counts
 * the bytes on its serial port for `windowMs`: loops = bytes * LOOPS_PER_BYTE. Every step has a
 * deadline, and QEMU is killed at the end whatever happened.
 */
async function runGuest(
  binary: string,
  accel: Accelerator,
  dir: string,
  bios: string,
  windowMs: number,
  machineTypes: string[],
): Promise<GuestRun> {
  const socket = path.join(dir, `qmp-${accel}.sock`);
  const args = [
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
    // qemu64 works under KVM where `-cpu host` and `-cpu max` do not (a nested KVM refuses MSRs).
    '-accel',
    accel,
    '-cpu',
    'qemu64',
    '-serial',
    'stdio',
    '-qmp',
    `unix:${socket},server=on,wait=off`,
  ];
  const run: GuestRun = { probe: notRun('not run'), version: null, machineTypes: {} };
  const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  let serialBytes = 0;
  let counting = false;
  child.stdout.on('data', (chunk: Buffer) => {
    if (counting) serialBytes += chunk.length;
  });
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    if (stderr.length < 4096) stderr += text;
  });
  const exited = new Promise<string>((resolve) => {
    child.once('error', (err) => resolve(`cannot run it (${(err as NodeJS.ErrnoException).code ?? err.message})`));
    // 'close', not 'exit': by then stderr has been read to its end, and it says why.
    child.once('close', (code, signal) => resolve(`QEMU exited (${signal ?? `status ${code}`})${firstError(stderr)}`));
  });
  let qmp: QmpClient | null = null;
  try {
    const connected = QmpClient.connect(socket, { timeoutMs: START_TIMEOUT_MS });
    const first = await Promise.race([
      connected.then(
        (c) => c,
        (err: Error) => err,
      ),
      exited,
    ]);
    if (typeof first === 'string') {
      connected.then(
        (c) => c.close(),
        () => {},
      );
      run.probe = notRun(first);
      return run;
    }
    if (first instanceof Error) {
      run.probe = notRun(first.message);
      return run;
    }
    qmp = first;
    run.version = `${qmp.version.major}.${qmp.version.minor}.${qmp.version.micro}`;
    if (machineTypes.length > 0) {
      const known = new Set(
        (await qmp.queryMachines({ timeoutMs: COMMAND_TIMEOUT_MS })).flatMap((m) => (m.alias ? [m.name, m.alias] : [m.name])),
      );
      run.machineTypes = Object.fromEntries(machineTypes.map((m) => [m, known.has(m)]));
    }
    await qmp.cont({ timeoutMs: COMMAND_TIMEOUT_MS });
    counting = true;
    const started = performance.now();
    const early = await Promise.race([exited, new Promise<null>((resolve) => setTimeout(resolve, windowMs, null))]);
    counting = false;
    const seconds = (performance.now() - started) / 1000;
    if (early !== null) {
      run.probe = notRun(early);
      return run;
    }
    const rate = Math.round((serialBytes * LOOPS_PER_BYTE) / seconds);
    run.probe =
      rate > 0
        ? { usable: true, reason: `ran the guest at ${loopRate(rate)}`, rate }
        : { usable: false, reason: `the guest did not finish one batch of ${LOOPS_PER_BYTE} loops in ${windowMs} ms`, rate: 0 };
    return run;
  } catch (err) {
    run.probe = notRun((err as Error).message);
    return run;
  } finally {
    await qmp?.close();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  }
}

function notRun(reason: string): AcceleratorProbe {
  return { usable: false, reason, rate: null };
}

/** QEMU's first `qemu-system-x86_64: ...` line, which says why it stopped. */
function firstError(stderr: string): string {
  const line = stderr.split('\n').find((l) => /^\S*qemu\S*: /.test(l) && !/warning:|terminating on signal/.test(l));
  return line ? `: ${line.replace(/[^\x20-\x7e]/g, '?').slice(0, 300)}` : '';
}

/** Null when `device` opens for reading and writing; otherwise why not. */
function cannotOpen(device: string): string | null {
  try {
    accessSync(device, constants.R_OK | constants.W_OK);
    return null;
  } catch (err) {
    return `${device} cannot be opened (${(err as NodeJS.ErrnoException).code})`;
  }
}

/** An absolute or relative path as given, or a bare name looked up on PATH. */
function findExecutable(binary: string, pathVariable: string): string | null {
  const candidates = binary.includes('/')
    ? [binary]
    : pathVariable
        .split(':')
        .filter(Boolean)
        .map((d) => path.join(d, binary));
  for (const candidate of candidates) {
    try {
      if (statSync(candidate).isFile()) {
        accessSync(candidate, constants.X_OK);
        return candidate;
      }
    } catch {
      // not this one
    }
  }
  return null;
}
