/**
 * `ferry vm console NAME [--follow]`: the guest's serial console, as the host that runs it keeps
 * it (a QEMU guest's GUESTDIR/console.log). With --follow it keeps printing what the guest writes
 * until Ctrl-C, and follows the guest to the host it migrates to; a guest stopped or destroyed
 * ends it. A synthetic guest has no serial console: its agent says so (exit 2).
 */
import { checkGuestName, defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError } from '../../errors.js';
import type { Cluster } from '../../coordinator/cluster.js';
import { connectHost } from '../../coordinator/connect.js';
import { locateGuest, type LocatedGuest } from '../../coordinator/locate.js';
import type { ConsoleEvent } from '../../control/protocol.js';
import type { Output } from '../output.js';
import { TerminalText } from '../terminal-text.js';

interface VmConsoleArgs {
  name: string;
  follow: boolean;
  cluster?: string;
}

/** How the command ended: the log printed to its end, Ctrl-C, or the guest ended here. */
type Ending = 'end' | 'interrupted' | 'stopped' | 'destroyed';

/** Where the guest is now that its process on `host` is gone: another host (it moved), or null (stopped or destroyed there). */
async function whereNow(cluster: Cluster, name: string, host: string): Promise<LocatedGuest | null> {
  const others = [...cluster.hosts.keys()].filter((h) => h !== host);
  if (others.length === 0) return null;
  return locateGuest(cluster, name, others).catch((err: FerryError) => {
    if (err.code === 'ERR_FERRY_NOT_FOUND') return null;
    throw err;
  });
}

async function stillThere(cluster: Cluster, name: string, host: string): Promise<boolean> {
  return locateGuest(cluster, name, [host]).then(
    () => true,
    (err: FerryError) => {
      if (err.code === 'ERR_FERRY_NOT_FOUND') return false;
      throw err;
    },
  );
}

/** The console log of guest `name` on `host` as it is now, read to its end (the demo shows its last lines). */
export async function readConsole(cluster: Cluster, host: string, name: string): Promise<string> {
  const client = await connectHost(cluster, host);
  let text = '';
  try {
    await client.call('guest.console', { name }, { timeoutMs: null, onEvent: (e) => (text += e.text) });
  } finally {
    client.close();
  }
  return text;
}

/** Prints guest `name`'s console; `follow`: and what it writes from then on, wherever it moves, until Ctrl-C or it ends. */
export async function runConsole(output: Output, cluster: Cluster, name: string, follow: boolean): Promise<void> {
  let { host } = await locateGuest(cluster, name);
  const terminal = output.stdoutIsTerminal ? new TerminalText() : null;
  const show = (e: ConsoleEvent) => {
    output.text(terminal ? terminal.feed(e.text) : e.text);
    output.emit({ type: 'console', vm: name, host, text: e.text, offset: e.offset });
  };
  let interrupted = false;
  let closeCurrent: (() => void) | null = null;
  // The first Ctrl-C ends the following, and the command with exit 0; a second one is the default (kill).
  const onSigint = () => {
    interrupted = true;
    process.off('SIGINT', onSigint);
    closeCurrent?.();
  };
  if (follow) process.on('SIGINT', onSigint);
  let offset = 0;
  let ending: Ending = 'end';
  try {
    for (;;) {
      const client = await connectHost(cluster, host);
      if (interrupted) {
        client.close();
        break;
      }
      closeCurrent = () => client.close();
      let reason: 'end' | 'stopped';
      try {
        const r = await client.call('guest.console', { name, offset, follow }, { timeoutMs: null, onEvent: show });
        offset = r.offset;
        reason = r.reason;
      } catch (err) {
        if (interrupted) break;
        throw err;
      } finally {
        closeCurrent = null;
        client.close();
      }
      if (interrupted || !follow || reason === 'end') break;
      const moved = await whereNow(cluster, name, host);
      if (moved) {
        output.info(`ferry: ${name} moved from ${host} to ${moved.host}; its console there:`);
        output.emit({ type: 'moved', vm: name, from: host, to: moved.host });
        host = moved.host;
        offset = 0;
        continue;
      }
      ending = (await stillThere(cluster, name, host)) ? 'stopped' : 'destroyed';
      // The result line says so under --json.
      output.info(`ferry: ${name} ${ending === 'stopped' ? 'stopped' : 'was destroyed'} on ${host}: no more console`);
      break;
    }
  } finally {
    process.off('SIGINT', onSigint);
    if (terminal) output.text(terminal.end());
  }
  if (interrupted) ending = 'interrupted';
  output.emit({ type: 'result', ok: true, vm: name, host, offset, ended: ending, error: null });
}

export const vmConsoleCommand = defineCommand<VmConsoleArgs>({
  command: 'console <name>',
  describe: "print a guest's serial console (QEMU guests); --follow keeps printing until Ctrl-C",
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('name', { type: 'string', demandOption: true, describe: 'the guest' })
      .option('follow', {
        alias: 'f',
        type: 'boolean',
        default: false,
        describe: 'keep printing what the guest writes, across its migrations, until Ctrl-C',
      })
      .example('$0 vm console vm1', "vm1's console so far, from the host that runs it")
      .example('$0 vm console vm1 --follow', 'and what it writes from then on, until Ctrl-C')
      .epilogue(
        'On a terminal, control characters the guest writes are shown as ^X (as `cat -v` does); piped, the text is as the guest wrote it. Exit status: 0 printed (also when --follow ends with Ctrl-C or the guest stops), 1 its host could not be reached or the guest is not running, 2 bad input, no such guest, or a guest without a serial console (synthetic).',
      ),
  run: async (output, args) => {
    checkGuestName(args.name);
    const cluster = await openCluster(args);
    await runConsole(output, cluster, args.name, args.follow);
  },
});
