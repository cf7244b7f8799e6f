/**
 * The ferry command line: parses argv with yargs, runs one command, and is the only place that
 * turns an error into an exit status (0 success, 1 the operation failed, 2 bad usage or input).
 */
import yargs from 'yargs';
import type { CommandModule } from 'yargs';
import { FerryError, toFerryError } from '../errors.js';
import { ReportedFailure, type GlobalArgs } from './command.js';
import { Output } from './output.js';
import { commands } from './commands/index.js';
import { benchCommand, loadBenchCommand } from './commands/bench.js';
import { COMPLETION_FLAG, completeFromArgv, HIDDEN_COMPLETION_COMMAND } from './completion.js';

export async function main(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  const debug = argv.includes('--debug');
  const output = new Output({ json, debug });
  if (argv.includes(COMPLETION_FLAG)) {
    const names = await completeFromArgv(argv);
    if (names !== null) {
      for (const n of names) process.stdout.write(`${n}\n`);
      return;
    }
  }
  try {
    let parser = yargs(argv)
      .scriptName('ferry')
      .usage('$0 <command> [options]\n\nMove running virtual machines between hosts, every byte sealed with AES-256-GCM.')
      .option('json', { type: 'boolean', default: false, describe: 'machine output: one JSON object per line on stdout' })
      .option('debug', { type: 'boolean', default: false, describe: 'show stack traces on errors' })
      .example('$0 demo', 'two local agents, a 1 GiB guest, one encrypted live migration')
      .example('$0 migrate web1 --to b', 'move guest web1 to host b, live')
      .example('$0 cancel web1', "cancel web1's migration (Ctrl-C does it for the `migrate` in front of you)")
      .example('$0 evacuate a --dry-run', 'where the guests of host a would go')
      .epilogue(
        'The cluster file: --cluster FILE or $FERRY_CLUSTER. Exit status: 0 done, 1 failed (guests stay where they were), 2 bad usage or input.',
      )
      .strict()
      .demandCommand(1, 'name a command: see `ferry --help`')
      .recommendCommands()
      .completion(HIDDEN_COMPLETION_COMMAND, false)
      .help()
      .alias('h', 'help')
      .version()
      .wrap(Math.min(110, process.stdout.columns || 100))
      .exitProcess(false)
      .fail((message, err) => {
        // yargs' own complaints (a YError, e.g. an option given without its value) are bad usage too.
        if (!err || err.name === 'YError') throw new FerryError('ERR_FERRY_USAGE', message ?? err.message);
        throw err;
      });
    // Benchmarks load only when asked for: the product never pays for their code.
    const bench = argv.find((a) => !a.startsWith('-')) === 'bench' ? await loadBenchCommand() : benchCommand;
    for (const command of commands)
      parser = parser.command((command === benchCommand ? bench : command) as CommandModule<GlobalArgs, never>);
    await parser.parseAsync();
  } catch (err) {
    const e = toFerryError(err);
    if (json && !(err instanceof ReportedFailure)) {
      output.emit({ type: 'result', ok: false, error: e.toJSON() });
    }
    output.error(`${e.message} [${e.code}]`);
    if (debug && err instanceof Error && err.stack) output.trace(err.stack);
    process.exitCode = e.exitCode;
  }
}
