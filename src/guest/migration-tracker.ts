/**
 * What a guest process knows about its current (or last) migration, for the agent that started
 * it and for an agent that re-attaches later: the phase, recent events, and the result. A
 * migration outlives the control connection that started it.
 */
import type { MigrationEvent, MigrationResult } from '../migration/types.js';

export type MigrationPhase = 'running' | 'ready-to-commit' | 'committed' | 'aborted' | 'in-doubt';

export interface MigrationInfo {
  role: 'source' | 'destination';
  migrationId: string;
  phase: MigrationPhase;
  lastEvent: MigrationEvent | null;
  result: MigrationResult | null;
}

const KEEP_EVENTS = 64;

export class MigrationTracker {
  phase: MigrationPhase = 'running';
  result: MigrationResult | null = null;
  /**
   * Source: the engine decided to pause for the hand-off (its 'switch-over' event, emitted in the
   * same tick as the decision). From then on a cancel is refused: the destination decides.
   */
  switchingOver = false;
  private readonly events: MigrationEvent[] = [];
  private readonly listeners = new Set<(event: MigrationEvent) => void>();
  private readonly waiters = new Set<{ done: () => boolean; resolve: () => void }>();

  constructor(
    readonly role: 'source' | 'destination',
    readonly migrationId: string,
  ) {}

  emit(event: MigrationEvent): void {
    this.events.push(event);
    if (this.events.length > KEEP_EVENTS) this.events.shift();
    // The guest runs at the destination (or is handed over, at the source) from this event on;
    // an agent waiting on commit() need not wait for the channel's farewells.
    if (event.type === 'ready-to-commit') this.setPhase('ready-to-commit');
    if (event.type === 'committed') this.setPhase('committed');
    if (event.type === 'switch-over') this.switchingOver = true;
    for (const l of this.listeners) l(event);
  }

  setPhase(phase: MigrationPhase, result?: MigrationResult): void {
    this.phase = phase;
    if (result) this.result = result;
    for (const w of [...this.waiters]) {
      if (w.done()) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  /** Nothing more happens without the agent: a decision is awaited, or the migration is over. */
  get settled(): boolean {
    return this.phase !== 'running';
  }

  /** Calls `listener` for every later event until the returned function is called. */
  subscribe(listener: (event: MigrationEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The migration is over: committed, aborted or in doubt. */
  get final(): boolean {
    return this.phase !== 'running' && this.phase !== 'ready-to-commit';
  }

  private waitFor(done: () => boolean): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.add({ done, resolve }));
  }

  waitSettled(): Promise<void> {
    return this.waitFor(() => this.settled);
  }

  waitFinal(): Promise<void> {
    return this.waitFor(() => this.final);
  }

  /**
   * Streams this migration's events to one caller (a control connection's await-migration) until
   * the migration settles or the caller goes away; then its info.
   */
  async follow(caller: { emit(event: MigrationEvent): void; closed: Promise<void> }): Promise<MigrationInfo> {
    const unsubscribe = this.subscribe((e) => caller.emit(e));
    try {
      await Promise.race([this.waitSettled(), caller.closed]);
    } finally {
      unsubscribe();
    }
    return this.info();
  }

  info(): MigrationInfo {
    return {
      role: this.role,
      migrationId: this.migrationId,
      phase: this.phase,
      lastEvent: this.events[this.events.length - 1] ?? null,
      result: this.result,
    };
  }
}
