/** `ferry host init|serve`: make a host and run its agent. */
import type { Argv, CommandModule } from 'yargs';
import { hostInitCommand } from './host-init.js';
import { hostServeCommand } from './host-serve.js';

export const hostCommand: CommandModule = {
  command: 'host <command>',
  describe: 'make a host and run its agent',
  builder: (yargs: Argv) =>
    yargs
      .command(hostInitCommand as CommandModule)
      .command(hostServeCommand as CommandModule)
      .demandCommand(1, 'name a host command: see `ferry host --help`'),
  handler: () => {},
};
