/** `ferry vm create|list|show|set|destroy|console`: guests, through their hosts' agents. */
import type { Argv, CommandModule } from 'yargs';
import { vmCreateCommand } from './vm-create.js';
import { vmListCommand } from './vm-list.js';
import { vmShowCommand } from './vm-show.js';
import { vmSetCommand } from './vm-set.js';
import { vmDestroyCommand } from './vm-destroy.js';
import { vmConsoleCommand } from './vm-console.js';

export const vmCommand: CommandModule = {
  command: 'vm <command>',
  describe: 'create, list, change and destroy guests; read their consoles',
  builder: (yargs: Argv) => {
    let y = yargs;
    for (const c of [vmCreateCommand, vmListCommand, vmShowCommand, vmSetCommand, vmDestroyCommand, vmConsoleCommand])
      y = y.command(c as CommandModule);
    return y.demandCommand(1, 'name a vm command: see `ferry vm --help`');
  },
  handler: () => {},
};
