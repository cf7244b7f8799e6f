/** Every command of the ferry CLI, one module each. */
import type { CommandModule } from 'yargs';
import { benchCommand } from './bench.js';

export const commands: CommandModule<any, any>[] = [benchCommand];
