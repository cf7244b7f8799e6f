/** `ferry host init|serve|wait|unit|list|remove`: make hosts, run and wait for their agents, list and remove them. */
import type { Argv, CommandModule } from 'yargs';
import { hostInitCommand } from './host-init.js';
import { hostServeCommand } from './host-serve.js';
import { hostWaitCommand } from './host-wait.js';
import { hostUnitCommand } from './host-unit.js';
import { hostListCommand } from './host-list.js';
import { hostRemoveCommand } from './host-remove.js';

export const hostCommand: CommandModule = {
  command: 'host <command>',
  describe: 'make hosts, run their agents, wait for them, list and remove them',
  builder: (yargs: Argv) => {
    let y = yargs;
    for (const c of [hostInitCommand, hostServeCommand, hostWaitCommand, hostUnitCommand, hostListCommand, hostRemoveCommand])
      y = y.command(c as CommandModule);
    return y.demandCommand(1, 'name a host command: see `ferry host --help`');
  },
  handler: () => {},
};
