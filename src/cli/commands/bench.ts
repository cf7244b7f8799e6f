/** `ferry bench <what>`: benchmarks that report ratios from one run. One module per subject. */
import type { Argv, CommandModule } from 'yargs';
import { benchChannelCommand } from './bench/channel.js';
import { benchCryptoCommand } from './bench/crypto.js';
import { benchEngineCommand } from './bench/engine.js';
import { benchMigrateCommand } from './bench/migrate.js';

const subjects: CommandModule<any, any>[] = [benchCryptoCommand, benchChannelCommand, benchEngineCommand, benchMigrateCommand];

export const benchCommand: CommandModule = {
  command: 'bench <subject>',
  describe: 'measure crypto, channel or migration speed (ratios from one run)',
  builder: (yargs: Argv) => {
    let y = yargs;
    for (const s of subjects) y = y.command(s);
    return y.demandCommand(1, 'name what to measure: see `ferry bench --help`');
  },
  handler: () => {},
};
