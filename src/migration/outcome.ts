/** The parts of a MigrationResult that the source and the destination fill in the same way. */
import type { Channel } from '../channel/types.js';
import type { MigrationOutcome, MigrationResult, PassReport } from './types.js';
import type { VerifyReport } from './verify.js';

export class Outcome {
  outcome: MigrationOutcome = 'aborted';
  error: { code: string; message: string } | null = null;
  downtimeMs: number | null = null;
  sourceDigest: string | null = null;
  destinationDigest: string | null = null;
  verification: VerifyReport | null = null;

  constructor(
    readonly role: 'source' | 'destination',
    readonly migrationId: string,
  ) {}

  result(figures: {
    passes: PassReport[];
    totalMs: number;
    bytesSent: number;
    bytesReceived: number;
    zeroPagesSkipped: number;
    throttlePercent: number;
    cpu: { user: number; system: number };
    /** This side's channel, for what its crypto ran on. */
    channel: Pick<Channel, 'cryptoThreads' | 'stats'>;
    /** Destination: the DATA payload buffers its pool allocated and reused; absent elsewhere. */
    payloadBuffers?: { allocated: number; reused: number } | null;
    /** Destination: DATA messages opened in place; absent elsewhere. */
    openedInPlace?: number | null;
    roundTripMs?: number | null;
  }): MigrationResult {
    const moved = this.role === 'source' ? figures.bytesSent : figures.bytesReceived;
    return {
      migrationId: this.migrationId,
      role: this.role,
      outcome: this.outcome,
      error: this.error,
      passes: figures.passes,
      totalMs: Math.round(figures.totalMs),
      downtimeMs: this.downtimeMs === null ? null : Math.round(this.downtimeMs * 10) / 10,
      bytesSent: figures.bytesSent,
      bytesReceived: figures.bytesReceived,
      zeroPagesSkipped: figures.zeroPagesSkipped,
      throughput: figures.totalMs > 0 ? Math.round((moved * 1000) / figures.totalMs) : 0,
      throttlePercent: figures.throttlePercent,
      sourceDigest: this.sourceDigest,
      destinationDigest: this.destinationDigest,
      verification: this.verification,
      cpu: { userMs: Math.round(figures.cpu.user / 1000), systemMs: Math.round(figures.cpu.system / 1000) },
      cryptoThreads: { limit: figures.channel.cryptoThreads, peak: figures.channel.stats.cryptoThreadsPeak },
      payloadBuffers: figures.payloadBuffers ?? null,
      openedInPlace: figures.openedInPlace ?? null,
      roundTripMs: figures.roundTripMs == null ? null : Math.round(figures.roundTripMs * 10) / 10,
      wireBytes: { sent: figures.channel.stats.wireBytesSent, received: figures.channel.stats.wireBytesReceived },
      keyEpochs: { sent: figures.channel.stats.keyEpochSent, received: figures.channel.stats.keyEpochReceived },
    };
  }
}
