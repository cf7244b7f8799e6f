/**
 * `ferry bench <subject>`: the benchmarks live in src/bench, apart from the product, and load only
 * when this command runs (cli/index.ts swaps this entry for the real one, subcommands and all).
 */
import type { CommandModule } from 'yargs';

/** The entry `ferry --help` lists; never run (the real command replaces it before parsing). */
export const benchCommand: CommandModule = {
  command: 'bench <subject>',
  describe: 'measure crypto, channel or migration speed (ratios from one run)',
  handler: () => {},
};

/** The real command, with every benchmark. */
export async function loadBenchCommand(): Promise<CommandModule> {
  return { ...(await import('../../bench/command.js')).benchCommand, describe: benchCommand.describe } as CommandModule;
}
