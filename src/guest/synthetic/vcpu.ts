/**
 * The guest process's handle on its workload worker: start, pause (returns once the worker has
 * stopped writing), resume, throttle, stop, ops/second, and the device state the worker publishes
 * when it halts.
 */
import { Worker } from 'node:worker_threads';
import type { Workload } from '../types.js';
import { CTL, CTL_WORDS, RUN_GO, RUN_PAUSE, RUN_STOP, STATE_BYTES } from './layout.js';
import type { WorkerInit } from './workload-worker.js';
import type { WorkloadDeviceState } from './workloads.js';

// Node 20 has Atomics.waitAsync; the ES2022 lib this project compiles against does not declare it.
const waitAsync = (
  Atomics as unknown as {
    waitAsync(array: Int32Array, index: number, value: number, timeoutMs: number): { async: boolean; value: Promise<string> | string };
  }
).waitAsync;

export interface VcpuParts {
  memoryBytes: number;
  slots: SharedArrayBuffer[];
  pageLog: SharedArrayBuffer;
  diskPath: string | null;
  diskBytes: number;
  blockLog: SharedArrayBuffer | null;
}

export class Vcpu {
  private readonly ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
  private readonly stateBuf = new SharedArrayBuffer(STATE_BYTES);
  private worker: Worker | null = null;
  private exited: Promise<void> = Promise.resolve();
  private gone = false;
  private lastOps = 0;
  private sampler: NodeJS.Timeout | null = null;
  /** Operations in the last full second. */
  opsPerSecond = 0;
  /** Set when the worker died of an error. */
  failure: Error | null = null;

  constructor(
    private readonly parts: VcpuParts,
    private readonly workload: Workload,
    private readonly seed: number,
  ) {}

  get started(): boolean {
    return this.worker !== null;
  }

  get ready(): boolean {
    return Atomics.load(this.ctl, CTL.READY) === 1;
  }

  get throttlePercent(): number {
    return Atomics.load(this.ctl, CTL.THROTTLE);
  }

  /** Starts the worker; with `resumed`, continuing from a migrated device state; `paused`: halted at once. */
  start(resumed: WorkloadDeviceState | null, paused = false): void {
    if (this.worker) return;
    Atomics.store(this.ctl, CTL.RUN, paused ? RUN_PAUSE : RUN_GO);
    const init: WorkerInit = {
      ...this.parts,
      control: this.ctl.buffer as SharedArrayBuffer,
      state: this.stateBuf,
      workload: this.workload,
      seed: this.seed,
      resumed,
    };
    // Next to this module when compiled; when tests run the sources through tsx, the compiled
    // worker (loader hooks do not reach a worker's entry module in Node 20).
    const entry = import.meta.url.endsWith('.ts') ? '../../../dist/guest/synthetic/workload-worker.js' : './workload-worker.js';
    const worker = new Worker(new URL(entry, import.meta.url), { workerData: init });
    this.worker = worker;
    this.exited = new Promise((resolve) => {
      worker.once('exit', () => {
        this.gone = true;
        Atomics.notify(this.ctl, CTL.HALTED);
        resolve();
      });
    });
    worker.on('error', (err) => {
      this.failure = err;
      process.stderr.write(`workload worker failed: ${err.stack ?? err.message}\n`);
    });
    this.sampler = setInterval(() => {
      const ops = Atomics.load(this.ctl, CTL.OPS);
      this.opsPerSecond = (ops - this.lastOps) | 0;
      this.lastOps = ops;
    }, 1000);
    this.sampler.unref();
  }

  private async halted(epoch: number): Promise<void> {
    if (!this.worker) return;
    for (;;) {
      const seen = Atomics.load(this.ctl, CTL.HALTED);
      if (seen === epoch || this.gone) return;
      const w = waitAsync(this.ctl, CTL.HALTED, seen, 1000);
      if (w.async) await w.value;
    }
  }

  /** Resolves once the worker has stopped writing (at once when there is no worker). */
  async pause(): Promise<void> {
    const epoch = (Atomics.load(this.ctl, CTL.EPOCH) + 1) | 0 || 1;
    Atomics.store(this.ctl, CTL.EPOCH, epoch);
    Atomics.store(this.ctl, CTL.RUN, RUN_PAUSE);
    Atomics.notify(this.ctl, CTL.RUN);
    await this.halted(epoch);
  }

  resume(): void {
    Atomics.store(this.ctl, CTL.RUN, RUN_GO);
    Atomics.notify(this.ctl, CTL.RUN);
  }

  setThrottle(percent: number): void {
    Atomics.store(this.ctl, CTL.THROTTLE, Math.max(0, Math.min(99, Math.round(percent))));
    Atomics.notify(this.ctl, CTL.RUN);
  }

  /** The device state the worker published when it last halted (call while paused). */
  deviceState(): WorkloadDeviceState | null {
    const length = Atomics.load(this.ctl, CTL.STATE_LENGTH);
    if (length === 0) return null;
    return JSON.parse(Buffer.from(this.stateBuf, 0, length).toString('utf8')) as WorkloadDeviceState;
  }

  async stop(): Promise<void> {
    if (this.sampler) clearInterval(this.sampler);
    if (!this.worker) return;
    Atomics.store(this.ctl, CTL.RUN, RUN_STOP);
    Atomics.notify(this.ctl, CTL.RUN);
    const timer = setTimeout(() => void this.worker?.terminate(), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}
