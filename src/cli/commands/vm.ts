/** `ferry vm create|list|set|destroy`: guests, through their hosts' agents. */
import type { Argv, CommandModule } from 'yargs';
import { vmCreateCommand } from './vm-create.js';
import { vmListCommand } from './vm-list.js';
import { vmSetCommand } from './vm-set.js';
import { vmDestroyCommand } from './vm-destroy.js';

export const vmCommand: CommandModule = {
  command: 'vm <command>',
  describe: 'create, list, change and destroy guests',
  builder: (yargs: Argv) => {
    let y = yargs;
    for (const c of [vmCreateCommand, vmListCommand, vmSetCommand, vmDestroyCommand]) y = y.command(c as CommandModule);
    return y.demandCommand(1, 'name a vm command: see `ferry vm --help`');
  },
  handler: () => {},
};
