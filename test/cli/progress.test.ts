/** Progress as shown: bars on a terminal, plain lines on a pipe, JSON lines only with --json. */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { Output } from '../../src/cli/output.js';
import { MigrationProgress } from '../../src/cli/progress.js';
import type { CoordinatorEvent } from '../../src/coordinator/migrate.js';
import { sleep } from '../../src/common/async.js';

function capture(tty: boolean) {
  const stream = Object.assign(new PassThrough(), { isTTY: tty, columns: 160 });
  let text = '';
  stream.on('data', (d) => (text += d));
  return { stream, text: () => text };
}

const events: CoordinatorEvent[] = [
  {
    type: 'decided',
    vm: 'web1',
    from: 'a',
    to: 'b',
    mode: 'plain',
    streams: 2,
    memoryBytes: 1 << 30,
    diskBytes: 0,
    warning: 'migrating in plain text: b cannot encrypt',
  },
  { type: 'nic-fallback', vm: 'web1', side: 'coordinator', host: 'b', nic: 'virtio' },
  { type: 'queued', vm: 'web1', side: 'source', position: 1 },
  { type: 'started', vm: 'web1', side: 'source' },
  {
    type: 'pass',
    vm: 'web1',
    side: 'source',
    pass: 1,
    bytesSent: 3 << 28,
    bytesLeft: 1 << 28,
    throughput: 1.25e9,
    dirtyRate: 1e6,
    zeroPagesSkipped: 10,
    throttlePercent: 0,
    elapsedMs: 700,
  },
  { type: 'failover', vm: 'web1', side: 'source', from: '10.0.0.2:7100', to: '10.1.0.2:7100', bytesResent: 3 << 20 },
  { type: 'switch-over', vm: 'web1', side: 'source', bytesLeft: 1 << 20, estimatedDowntimeMs: 20 },
  { type: 'committed', vm: 'web1', side: 'source', downtimeMs: 31 },
];

/** Feeds the events a little apart, as they arrive in a migration (bars redraw on a timer). */
async function show(json: boolean, tty: boolean) {
  const out = capture(false);
  const err = capture(tty);
  const progress = new MigrationProgress(new Output({ json, debug: false, stdout: out.stream, stderr: err.stream }), ['web1']);
  for (const e of events) {
    progress.event(e);
    if (tty) await sleep(150);
  }
  progress.stop();
  return { stdout: out.text(), stderr: err.text() };
}

describe('cli: migration progress', function () {
  it('draws a bar with pass, sent, left, throughput, dirty rate and ETA on a terminal', async function () {
    const { stdout, stderr } = await show(false, true);
    assert.equal(stdout, '');
    assert.match(stderr, /web1 [█░]+ +75% running: pass 1, 768 MiB sent, 256 MiB left, 10\.00 Gbit\/s, dirty 8\.0 Mbit\/s, ETA 215 ms/);
    assert.match(stderr, /queued at the source \(place 1\)/);
    assert.match(stderr, /warning:.*b cannot encrypt/);
    assert.match(stderr, /100% committed, downtime 31 ms/);
    assert.match(stderr, /warning:.*web1: b has no passthrough NIC: the guest gets the emulated one \(virtio\) there/);
    assert.match(
      stderr,
      /warning:.*web1: migration network 10\.0\.0\.2:7100 lost; carrying on over 10\.1\.0\.2:7100 \(3\.00 MiB sent again\)/,
    );
  });

  it('writes plain lines without control codes on a pipe', async function () {
    const { stdout, stderr } = await show(false, false);
    assert.equal(stdout, '');
    assert.ok(!stderr.includes('\x1b[') && !stderr.includes('█'), stderr);
    assert.match(stderr, /^web1: running: pass 1, 768 MiB sent/m);
    assert.match(stderr, /^web1: committed, downtime 31 ms$/m);
  });

  it('prints each event as one JSON line on stdout with --json; on stderr only what people must see (warnings, the NIC fall-back, a failover)', async function () {
    const { stdout, stderr } = await show(true, true);
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((l) => l.type),
      events.map((e) => e.type),
    );
    assert.deepEqual(lines[4], events[4]);
    // For people even under --json: the plain-text warning, the NIC fall-back, the failover.
    const said = stderr.trim().split('\n');
    assert.equal(said.length, 3, stderr);
    assert.match(said[0]!, /warning:.* web1: migrating in plain text/);
    assert.match(said[1]!, /warning:.* web1: b has no passthrough NIC/);
    assert.match(said[2]!, /warning:.* web1: migration network 10\.0\.0\.2:7100 lost/);
  });
});
