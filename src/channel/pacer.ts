/**
 * The bandwidth cap: a token bucket over payload bytes, shared by every stream of a channel. Frames
 * leave in the order they were queued (so each connection's sequence order holds); control frames
 * cost nothing but still wait their turn behind data.
 */
export interface PacedSink {
  write(frame: Buffer): void;
}

interface Queued {
  sink: PacedSink;
  frame: Buffer;
  cost: number;
}

export class Pacer {
  private readonly queue: Queued[] = [];
  private head = 0;
  private tokens: number;
  private last = performance.now();
  private timer: NodeJS.Timeout | null = null;
  private readonly burst: number;

  /** `rate` in bytes a second; undefined or 0: no cap, frames go straight out. */
  constructor(
    private readonly rate: number | undefined,
    maxFrame: number,
  ) {
    // 10 ms of tokens keeps the average exact with millisecond timers; one frame at least.
    this.burst = rate ? Math.max(maxFrame, rate * 0.01) : 0;
    this.tokens = this.burst;
  }

  push(sink: PacedSink, frame: Buffer, cost: number): void {
    if (!this.rate || (this.head === this.queue.length && (cost === 0 || this.take(cost)))) {
      sink.write(frame);
      return;
    }
    this.queue.push({ sink, frame, cost });
    this.drain();
  }

  /** Takes back the frames queued for a connection that is closing; returns them in order. */
  drop(sink: PacedSink): Buffer[] {
    const mine: Buffer[] = [];
    const kept: Queued[] = [];
    for (const q of this.queue.slice(this.head)) {
      if (q.sink === sink) mine.push(q.frame);
      else kept.push(q);
    }
    this.queue.length = 0;
    this.queue.push(...kept);
    this.head = 0;
    return mine;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.queue.length = 0;
    this.head = 0;
  }

  private refill(): void {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate!);
    this.last = now;
  }

  /** Spends `cost` if the bucket is not in debt; a big frame may take it below zero. */
  private take(cost: number): boolean {
    this.refill();
    if (this.tokens <= 0) return false;
    this.tokens -= cost;
    return true;
  }

  private drain(): void {
    while (this.head < this.queue.length) {
      const q = this.queue[this.head]!;
      if (q.cost !== 0 && !this.take(q.cost)) break;
      this.head++;
      q.sink.write(q.frame);
    }
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
      return;
    }
    if (this.head > 1024) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    if (!this.timer) {
      const wait = Math.max(1, Math.ceil((-this.tokens / this.rate!) * 1000));
      this.timer = setTimeout(() => {
        this.timer = null;
        this.drain();
      }, wait);
    }
  }
}
