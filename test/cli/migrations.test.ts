/**
 * `ferry migrations`' merge of both sides' views and its table: one row per migration id, the
 * source's figures with the destination's network, a side that did not answer left out, and a
 * table of at most 120 columns however long the names (the end-to-end test runs it on real agents).
 */
import assert from 'node:assert/strict';
import type { MigrationJob } from '../../src/control/protocol.js';
import { mergeJobs, migrationsTable, TABLE_COLUMNS } from '../../src/cli/commands/migrations.js';

function job(over: Partial<MigrationJob> & Pick<MigrationJob, 'migrationId' | 'role' | 'host' | 'peer'>): MigrationJob {
  return {
    guest: 'web1',
    phase: 'running',
    position: null,
    since: 1000,
    mode: 'encrypted',
    maxBytesPerSecond: null,
    pass: null,
    bytesSent: null,
    bytesLeft: null,
    rate: null,
    dirtyRate: null,
    throttlePercent: null,
    etaMs: null,
    expectedDowntimeMs: null,
    bytesReceived: null,
    network: null,
    failovers: 0,
    ...over,
  };
}

describe('cli: ferry migrations, merged and drawn', function () {
  it('merges the two sides of a migration by id, and keeps one seen from one side only', function () {
    const source = job({
      migrationId: 'm1',
      role: 'source',
      host: 'a',
      peer: 'b',
      pass: 2,
      bytesSent: 5e8,
      bytesLeft: 1e7,
      rate: 1e8,
      etaMs: 120,
      since: 900,
    });
    const destination = job({
      migrationId: 'm1',
      role: 'destination',
      host: 'b',
      peer: 'a',
      bytesReceived: 4e8,
      network: '10.1.0.2:7100',
      failovers: 1,
    });
    const queued = job({
      migrationId: 'm2',
      role: 'destination',
      host: 'b',
      peer: 'c',
      guest: 'db1',
      phase: 'queued',
      position: 1,
      since: 2000,
    });
    const rows = mergeJobs([
      { host: 'a', migrations: [source] },
      { host: 'b', migrations: [destination, queued] },
    ]);
    assert.equal(rows.length, 2);
    const [m1, m2] = rows;
    assert.deepEqual(
      {
        from: m1!.from,
        to: m1!.to,
        pass: m1!.pass,
        sent: m1!.bytesSent,
        received: m1!.bytesReceived,
        network: m1!.network,
        failovers: m1!.failovers,
      },
      { from: 'a', to: 'b', pass: 2, sent: 5e8, received: 4e8, network: '10.1.0.2:7100', failovers: 1 },
    );
    assert.deepEqual(m1!.seenBy, ['source', 'destination']);
    assert.equal(m1!.since, 900, 'the earlier of the two sides');
    assert.deepEqual(
      { from: m2!.from, to: m2!.to, queue: m2!.queue, seenBy: m2!.seenBy },
      { from: 'c', to: 'b', queue: { host: 'b', position: 1 }, seenBy: ['destination'] },
    );
  });

  it('fits 120 columns, shortening the longest names and addresses, and leaves short ones whole', function () {
    const long = 'g'.repeat(63);
    const rows = mergeJobs([
      {
        host: 'h'.repeat(63),
        migrations: [
          job({
            migrationId: 'm1',
            role: 'source',
            host: 'h'.repeat(63),
            peer: 'p'.repeat(63),
            guest: long,
            pass: 12,
            bytesSent: 2 ** 40,
            bytesLeft: 2 ** 30,
            rate: 1.2e9,
            dirtyRate: 3e8,
            etaMs: 61_000,
            network: '[2001:db8:1234:5678:9abc:def0:1234:5678]:7100',
            failovers: 3,
          }),
          job({ migrationId: 'm2', role: 'source', host: 'h'.repeat(63), peer: 'b', guest: 'web1', phase: 'queued', position: 12 }),
        ],
      },
    ]);
    const lines = migrationsTable(rows);
    for (const line of lines) assert.ok(line.length <= TABLE_COLUMNS, `${line.length}: ${line}`);
    assert.match(lines[1]!, /^g+…\s/);
    assert.match(lines[2]!, /^web1\s+h+…\s+b\s+queued #12 at h+…?\s/);

    const short = migrationsTable(
      mergeJobs([{ host: 'a', migrations: [job({ migrationId: 'm1', role: 'source', host: 'a', peer: 'b', network: '127.0.0.1:7101' })] }]),
    );
    assert.doesNotMatch(short.join('\n'), /…/);
    assert.match(short[1]!, /^web1\s+a\s+b\s+running\s+-\s+-\s+-\s+-\s+-\s+-\s+127\.0\.0\.1:7101\s+0$/);
  });
});
