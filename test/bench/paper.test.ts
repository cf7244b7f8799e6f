/**
 * `ferry bench paper --quick` as a user runs it (needs `npm run build`, which `npm test` does):
 * tiny guests, one round, every experiment, real guest processes, the WAN emulator, the peers.
 * Speeds are never asserted; the shape of the result and of the charts is.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ferryAsync } from '../support/cli.js';
import { jsonLines } from '../support/json-output.js';
import { goals, type Row } from '../../src/bench/paper.js';

describe('ferry bench paper', function () {
  this.timeout(10 * 60_000);
  let out: string;
  before(() => (out = mkdtempSync(path.join(tmpdir(), 'ferry-paper-test-'))));
  after(() => rmSync(out, { recursive: true, force: true }));

  it('--quick runs every experiment, encrypted and plain, and writes the result and one SVG chart per experiment', async function () {
    const r = await ferryAsync(['bench', 'paper', '--quick', '--json', '--out', out]);
    assert.equal(r.status, 0, r.stderr);
    const result = jsonLines(r.stdout).find((l) => l.type === 'result')!;
    assert.ok(result, r.stdout);
    assert.equal(result.quick, true);
    assert.ok(result.kvScale > 0 && result.kvScale <= 1, `kv scale ${result.kvScale}`);
    assert.match(result.machine.cpu, /\S/);
    assert.equal(typeof result.machine.cores, 'number');
    const rows = result.rows as Row[];
    assert.ok(rows.every((row) => row.ok && row.totalMs > 0 && row.bytesSent > 0));
    const categories = (e: string) => [...new Set(rows.filter((row) => row.experiment === e).map((row) => row.category))];
    assert.deepEqual(categories('workloads'), ['idle', '200k/0k', '150k/50k', '100k/100k', '50k/150k', '0k/200k']);
    assert.deepEqual(categories('sizes'), ['32 MiB', '64 MiB']);
    assert.deepEqual(categories('links'), ['2.5 Gb/s', '10 Gb/s']);
    assert.deepEqual(categories('distance'), ['0.5 ms', '50 ms']);
    for (const e of ['workloads', 'sizes', 'links', 'distance'])
      for (const c of categories(e))
        for (const v of ['encrypted', 'plain'])
          assert.ok(
            rows.some((row) => row.experiment === e && row.category === c && row.variant === v),
            `${e} ${c} ${v}`,
          );
    assert.ok(rows.filter((row) => row.variant === 'encrypted+verify').every((row) => row.verified));
    const distance = rows.filter((row) => row.experiment === 'distance');
    assert.ok(
      distance.every((row) => row.ops.some((s) => s.t < 0) && row.ops.some((s) => s.t > row.totalMs)),
      'ops sampled before and after each long-distance move',
    );
    assert.ok(result.goals.length > 10 && result.goals.every((g: { goal: string }) => /^(<=|>=) [\d.]+$/.test(g.goal)));
    assert.ok(
      result.peers.notes.some((n: string) => /QEMU/.test(n)),
      'a quick run says it leaves QEMU out',
    );
    const files = result.files as string[];
    assert.equal(files.length, 7);
    assert.deepEqual(JSON.parse(readFileSync(files[0]!, 'utf8')).rows.length, rows.length);
    const charts = Object.fromEntries(
      files.slice(1).map((f) => [path.basename(f).replace(/^paper-quick-[\dTZ-]+-/, ''), readFileSync(f, 'utf8')]),
    );
    assert.deepEqual(Object.keys(charts).sort(), [
      'paper-distance-ops.svg',
      'paper-distance.svg',
      'paper-links-cpu.svg',
      'paper-links-throughput.svg',
      'paper-sizes.svg',
      'paper-workloads.svg',
    ]);
    for (const [name, svg] of Object.entries(charts)) {
      assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/, name);
      assert.match(svg, /<\/svg>$/, name);
      assert.match(svg, />[^<]*encrypted</, `${name}: the encrypted series is labelled`);
      assert.match(svg, />[^<]*plain</, `${name}: the plain series is labelled`);
    }
    assert.match(charts['paper-workloads.svg']!, />100k\/100k</);
    assert.match(charts['paper-distance-ops.svg']!, />50 ms</);
  });

  it('states each goal from medians of the run, met or not, and none when a figure is missing', function () {
    const row = (o: Partial<Row>): Row =>
      ({
        ok: true,
        experiment: 'links',
        category: '10 Gb/s',
        variant: 'plain',
        totalMs: 1000,
        switchoverMs: 50,
        throughputGbps: 9,
        ...o,
      }) as Row;
    const g = goals([
      row({ variant: 'encrypted', throughputGbps: 8.5, sourceCores: 0.9, destinationCores: 0.7 }),
      row({ variant: 'plain', throughputGbps: 9, sourceCores: 0.5, destinationCores: 0.5 }),
    ]);
    const byName = Object.fromEntries(g.map((x) => [x.name, x]));
    assert.equal(byName['links 10 Gb/s: encrypted / plain throughput']!.met, false);
    assert.ok(Math.abs(byName["links 10 Gb/s: encryption's CPU, cores per 10 Gb/s, source"]!.value! - (0.4 * 10) / 8.5) < 1e-9);
    assert.equal(byName["links 10 Gb/s: encryption's CPU, cores per 10 Gb/s, destination"]!.met, true);
    assert.deepEqual(goals([]), []);
  });
});
