/**
 * The shape of every command (changesets / angular-cli): a typed yargs module whose handler calls
 * a plain `run(output, args)`. Commands never exit the process; they throw FerryError and the
 * entry point maps its code to the exit status.
 */
import type { Argv, CommandModule } from 'yargs';
import { FerryError } from '../errors.js';
import { GUEST_NAME, GUEST_NAME_RULE } from '../common/names.js';
import { Output } from './output.js';

export interface GlobalArgs {
  json: boolean;
  debug: boolean;
}

export interface CommandSpec<A> {
  command: string | readonly string[];
  describe: string;
  builder: (yargs: Argv<GlobalArgs>) => Argv<A>;
  run: (output: Output, args: A & GlobalArgs) => Promise<void>;
}

export function defineCommand<A>(spec: CommandSpec<A>): CommandModule<GlobalArgs, A> {
  return {
    command: spec.command,
    describe: spec.describe,
    builder: spec.builder as CommandModule<GlobalArgs, A>['builder'],
    handler: async (args) => {
      const a = args as unknown as A & GlobalArgs;
      await spec.run(new Output({ json: a.json, debug: a.debug }), a);
    },
  };
}

/**
 * A failure whose `{"type":"result","ok":false,...}` line the command already printed: the entry
 * point only says why on stderr and sets the exit status.
 */
export class ReportedFailure extends FerryError {}

/** A guest name given on the command line, checked before any host is asked (exit 2 when wrong). */
export function checkGuestName(name: string): string {
  if (!GUEST_NAME.test(name)) throw new FerryError('ERR_FERRY_USAGE', `"${name}" is not a guest name: ${GUEST_NAME_RULE}`);
  return name;
}
