/** `ferry bench <what>`: benchmarks that report ratios from one run. One module per subject; loaded only by `ferry bench`. */
import type { Argv, CommandModule } from 'yargs';
import { benchChannelCommand } from './channel.js';
import { benchChaosCommand } from './chaos.js';
import { benchCryptoCommand } from './crypto.js';
import { benchEngineCommand } from './engine.js';
import { benchMigrateCommand } from './migrate.js';
import { benchPaperCommand } from './paper.js';
import { benchQemuCommand } from './qemu.js';
import { benchQemuDigestsCommand } from './qemu-digests.js';

// Commands of different argument types in one list: yargs's CommandModule is invariant in them.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const subjects: CommandModule<any, any>[] = [
  benchCryptoCommand,
  benchChannelCommand,
  benchEngineCommand,
  benchMigrateCommand,
  benchQemuCommand,
  benchQemuDigestsCommand,
  benchPaperCommand,
  benchChaosCommand,
];

/** Its description is the one `ferry --help` lists (src/cli/commands/bench.ts). */
export const benchCommand: Omit<CommandModule, 'describe'> = {
  command: 'bench <subject>',
  builder: (yargs: Argv) => {
    let y = yargs;
    for (const s of subjects) y = y.command(s);
    return y.demandCommand(1, 'name what to measure: see `ferry bench --help`');
  },
  handler: () => {},
};
