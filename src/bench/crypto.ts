/** `ferry bench crypto`: AES-256-GCM and zero-page scan speed, with `openssl speed` in the same run. */
import type { Argv } from 'yargs';
import { defineCommand, type GlobalArgs } from '../cli/command.js';
import type { Output } from '../cli/output.js';
import { FerryError } from '../errors.js';
import { benchCrypto, FRAME_SIZES, type CryptoBenchResult } from './crypto-measure.js';

interface CryptoArgs {
  seconds: number;
}

const sizeLabel = (n: number) => (n >= 1048576 ? `${n / 1048576} MiB` : `${n / 1024} KiB`);
const gbps = (v: number | null | undefined) => (v == null ? '—' : v.toFixed(2));
const pad = (s: string, n: number) => s.padEnd(n);
const padl = (s: string, n: number) => s.padStart(n);

function printTable(output: Output, r: CryptoBenchResult): void {
  const m = r.machine;
  output.print(`${m.cpu}, ${m.cores} cores; node ${m.node}; ${m.openssl ?? 'no openssl'}`);
  output.print(`native AES-GCM implementations here: ${m.gcmImplementations.join(', ') || 'none'}`);
  output.print();
  const head = `${pad('GB/s', 34)}${FRAME_SIZES.map((s) => padl(sizeLabel(s), 9)).join('')}   how`;
  for (const op of ['seal', 'open'] as const) {
    output.print(`${head.replace('GB/s', `${op} GB/s`)}`);
    for (const row of r.throughput.filter((x) => x.op === op)) {
      const name = `${row.backend}, ${row.threads === 'one' ? 'one thread' : 'all threads'}`;
      output.print(`  ${pad(name, 32)}${FRAME_SIZES.map((s) => padl(gbps(row.gbps[s]), 9)).join('')}   ${row.how}`);
    }
    if (op === 'seal') {
      const o = r.openssl.gbps;
      output.print(`  ${pad('openssl speed -evp, one thread', 32)}${FRAME_SIZES.map((s) => padl(gbps(o?.[s]), 9)).join('')}`);
    }
    output.print();
  }
  const z = r.zeroScan;
  output.print(`zero-page scan of ${z.bytes / 1048576} MiB of written memory, one thread (GB/s):`);
  output.print(
    `  all-zero pages ${gbps(z.allZeroGBps)}   no zero page ${gbps(z.nonZeroGBps)}   ` +
      `TypeScript scan ${gbps(z.typescriptAllZeroGBps)}   memory read ${gbps(z.readBandwidthGBps)}`,
  );
  output.print();
  output.print('ratios (goal):');
  for (const [name, v] of Object.entries(r.ratios)) {
    const verdict = v.met === null ? 'n/a' : v.met ? 'met' : 'NOT met';
    output.print(`  ${pad(name, 62)} ${padl(v.value === null ? '—' : `${v.value.toFixed(2)}x`, 7)}  (>= ${v.goal}x: ${verdict})`);
  }
  for (const note of r.notes) output.print(`note: ${note}`);
}

export const benchCryptoCommand = defineCommand<CryptoArgs>({
  command: 'crypto',
  describe: 'AES-256-GCM seal/open GB/s per backend and thread count, zero-page scan GB/s, vs openssl speed',
  builder: (yargs: Argv<GlobalArgs>) =>
    yargs
      .option('seconds', {
        type: 'number',
        default: 0.3,
        describe: 'seconds per measurement (the whole run takes about 100 of them, plus 8 s of openssl speed)',
      })
      .example('$0 bench crypto', 'the table, about 40 s')
      .example('$0 bench crypto --json --seconds 1', 'one JSON object, longer measurements'),
  run: async (output, args) => {
    if (!(args.seconds > 0 && args.seconds <= 60)) {
      throw new FerryError('ERR_FERRY_USAGE', `--seconds must be more than 0 and at most 60; got ${args.seconds}`);
    }
    const result = await benchCrypto({ seconds: args.seconds, progress: (line) => output.info(line) });
    output.emit({ type: 'result', ok: true, subject: 'crypto', ...result });
    printTable(output, result);
  },
});
