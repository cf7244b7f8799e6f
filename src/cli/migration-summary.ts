/**
 * What people are shown when a migration ends (stdout: it is the command's result). A failed one
 * shows nothing here: its one error line on stderr says why and where the guest runs.
 */
import type { MigrationSummary } from '../coordinator/migrate.js';
import { formatBytes, formatDuration, formatRate } from '../common/units.js';

export function summaryLines(s: MigrationSummary): string[] {
  const r = s.report;
  if (!r.ok) return [];
  const crypto = r.mode === 'encrypted' ? `encrypted (AES-256-GCM, ${r.backend} backend)` : 'plain text (not encrypted)';
  const lines = [
    `${r.vm} moved ${r.from} -> ${r.to}, ${crypto}`,
    `  total time    ${formatDuration(r.totalMs)}`,
    `  downtime      ${r.switchoverMs === null ? '-' : formatDuration(r.switchoverMs)}`,
    `  sent          ${formatBytes(r.bytesSent)} in ${r.passes} pass${r.passes === 1 ? '' : 'es'}`,
    `  zero pages    ${r.zeroPagesSkipped} skipped (${formatBytes(r.zeroPagesSkipped * 4096)} not sent)`,
    `  throughput    ${formatRate(s.throughput)}`,
  ];
  if (s.roundTripMs !== null)
    lines.push(
      `  round trip    ${s.roundTripMs < 10 ? `${s.roundTripMs.toFixed(1)} ms` : formatDuration(s.roundTripMs)} (the data link's, which the pause holds)`,
    );
  if (r.queuedMs > 0) lines.push(`  queued        ${formatDuration(r.queuedMs)} before it started (not in the total)`);
  for (const f of r.failovers)
    lines.push(`  failover      ${f.from} -> ${f.to}${f.bytesResent > 0 ? `, ${formatBytes(f.bytesResent)} sent again` : ''}`);
  if (r.verified !== null)
    lines.push(
      `  verified      ${r.verified ? 'yes: source and destination memory digests match' : 'NO: digests differ'}${r.verifyMs !== null ? ` (${formatDuration(r.verifyMs)} of the pause)` : ''}`,
    );
  if (r.nicFallback) lines.push(`  NIC           passthrough NIC replaced by the emulated one (virtio): ${r.to} has none`);
  if (s.warning) lines.push(`  warning       ${s.warning}`);
  return lines;
}
