/**
 * The workload worker: the guest's "vCPU". It shares guest memory, the dirty logs and a control
 * block with the guest process, and obeys RUN (go, pause, stop) between single operations, so a
 * pause returns only once no write is in flight. While halted it has published its device state.
 *
 * Pacing runs on guest time: guest time advances at (100 - throttle)% of real time, so a
 * rate-paced workload slows in proportion to its throttle, and a CPU-bound one also sleeps that
 * share of its busy time — as a throttled vCPU is held off its CPU.
 */
import { workerData } from 'node:worker_threads';
import type { Workload } from '../types.js';
import { DirtyLog } from './dirty-log.js';
import { DiskImage } from './disk.js';
import { CTL, RUN_GO, RUN_STOP, STATE_BYTES, blockCountOf } from './layout.js';
import { GuestMemory } from './memory.js';
import type { VcpuParts } from './vcpu.js';
import { createWorkload, type WorkloadDeviceState } from './workloads.js';

export interface WorkerInit extends VcpuParts {
  control: SharedArrayBuffer;
  state: SharedArrayBuffer;
  workload: Workload;
  seed: number;
  resumed: WorkloadDeviceState | null;
}

const init = workerData as WorkerInit;
const ctl = new Int32Array(init.control);
const memory = new GuestMemory(init.memoryBytes, init.slots);
const pageLog = new DirtyLog(memory.pageCount, init.pageLog);
const disk = init.diskPath ? DiskImage.open(init.diskPath, init.diskBytes) : null;
const blockLog = init.blockLog ? new DirtyLog(blockCountOf(init.diskBytes), init.blockLog) : null;
const runner = createWorkload(init.workload, { memory, pageLog, disk, blockLog }, init.seed, init.resumed ?? undefined);
const stateBytes = new Uint8Array(init.state);

function publishState(): void {
  const json = Buffer.from(JSON.stringify(runner.state()));
  if (json.length > STATE_BYTES) throw new Error(`device state is ${json.length} bytes, over ${STATE_BYTES}`);
  stateBytes.set(json);
  Atomics.store(ctl, CTL.STATE_LENGTH, json.length);
}

/**
 * Halts while RUN is not GO; false when told to stop. The state is published first, then the
 * current pause epoch acknowledged (again after every wake-up, for pauses that came meanwhile).
 */
function checkpoint(): boolean {
  let run = Atomics.load(ctl, CTL.RUN);
  if (run === RUN_GO) return true;
  publishState();
  for (;;) {
    Atomics.store(ctl, CTL.HALTED, Atomics.load(ctl, CTL.EPOCH));
    Atomics.notify(ctl, CTL.HALTED);
    if (run === RUN_STOP) return false;
    if (run === RUN_GO) return true;
    Atomics.wait(ctl, CTL.RUN, run);
    run = Atomics.load(ctl, CTL.RUN);
  }
}

/** Sleeps up to `ms`, waking at once on any change of RUN. */
function nap(ms: number): void {
  if (ms > 0) Atomics.wait(ctl, CTL.RUN, RUN_GO, ms);
}

function throttleShare(): number {
  return Math.min(99, Math.max(0, Atomics.load(ctl, CTL.THROTTLE))) / 100;
}

function run(): void {
  while (checkpoint()) {
    const started = performance.now();
    const done = runner.setupSlice();
    nap(((performance.now() - started) * throttleShare()) / (1 - throttleShare()));
    if (done) break;
  }
  Atomics.store(ctl, CTL.READY, 1);

  const rate = runner.rate;
  let guestMs = 0;
  let last = performance.now();
  while (checkpoint()) {
    const now = performance.now();
    const share = throttleShare();
    guestMs += (now - last) * (1 - share);
    last = now;
    if (rate === 0) {
      nap(1000);
      continue;
    }
    const due = (guestMs * rate) / 1000;
    if (due < 1) {
      nap(Math.min(5, ((1 - due) * 1000) / rate / Math.max(0.01, 1 - share)));
      continue;
    }
    // Do what is due, in batches of at most ~1 ms, then give the time share back when throttled.
    const batch = Math.min(Math.floor(due), Math.max(1, Math.ceil(rate / 1000)));
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) runner.op();
    Atomics.add(ctl, CTL.OPS, batch);
    guestMs -= (batch * 1000) / rate;
    // A workload that cannot keep up does not owe a burst later: cap the backlog at 50 ms.
    guestMs = Math.min(guestMs, 50);
    if (share > 0) nap(((performance.now() - t0) * share) / (1 - share));
  }
  disk?.close();
}

run();
