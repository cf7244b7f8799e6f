/** Every command of the ferry CLI, one module each. */
import type { CommandModule } from 'yargs';
import { benchCommand } from './bench.js';
import { pkiCommand } from './pki.js';
import { hostCommand } from './host.js';
import { vmCommand } from './vm.js';
import { migrateCommand } from './migrate.js';
import { cancelCommand } from './cancel.js';
import { evacuateCommand } from './evacuate.js';
import { probeCommand } from './probe.js';
import { demoCommand } from './demo.js';
import { resolveCommand } from './resolve.js';
import { migrationsCommand } from './migrations.js';
import { completionCommand } from '../completion.js';

// Commands of different argument types in one list: yargs's CommandModule is invariant in them.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [
  benchCommand,
  pkiCommand,
  hostCommand,
  vmCommand,
  migrateCommand,
  cancelCommand,
  evacuateCommand,
  resolveCommand,
  migrationsCommand,
  probeCommand,
  demoCommand,
  completionCommand,
];
