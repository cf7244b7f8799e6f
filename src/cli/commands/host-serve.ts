/**
 * `ferry host serve --dir HOSTDIR [--log-file FILE] [--ready-fd N]`: run the host agent until
 * SIGTERM or SIGINT. Where its log goes: src/cli/agent-log.ts. Readiness: "READY=1\n" on fd N once
 * both the migration networks and the control API listen, and `ferry host wait` from outside.
 */
import { closeSync, readdirSync, readFileSync, readlinkSync, writeSync } from 'node:fs';
import { defineCommand } from '../command.js';
import { Agent } from '../../agent/agent.js';
import { FerryError } from '../../errors.js';
import { openAgentLog } from '../agent-log.js';
import { metricsAddress } from '../../agent/metrics.js';

const O_ACCMODE = 0o3;

/**
 * Whether `fd` is open for writing and came from the caller, not one of Node's own (its epoll and
 * eventfd descriptors, and pipes of which it holds both ends): writing READY=1 into one of those
 * would upset the event loop. Linux says which in /proc/self.
 */
function givenForWriting(fd: number): boolean {
  try {
    const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    if (!flags || (parseInt(flags[1]!, 8) & O_ACCMODE) === 0) return false;
    const target = readlinkSync(`/proc/self/fd/${fd}`);
    if (target.startsWith('anon_inode:')) return false;
    if (!target.startsWith('pipe:')) return true;
    return readdirSync('/proc/self/fd').every((other) => Number(other) === fd || readlinkSafe(`/proc/self/fd/${other}`) !== target);
  } catch {
    return false;
  }
}

function readlinkSafe(link: string): string | null {
  try {
    return readlinkSync(link);
  } catch {
    return null;
  }
}

interface HostServeArgs {
  dir: string;
  encryption: boolean;
  'log-file'?: string;
  'ready-fd'?: number;
  metrics?: string;
}

/** The readiness fd, checked before the agent starts: an fd that is not open is a mistake in the caller's redirections. */
function readyFd(value: number | undefined): number | null {
  if (value === undefined) return null;
  if (!Number.isSafeInteger(value) || value < 3) {
    throw new FerryError(
      'ERR_FERRY_USAGE',
      `--ready-fd: ${Number.isNaN(value) ? 'not a number' : value}: a file descriptor of 3 or more (0-2 are stdin, stdout, stderr)`,
    );
  }
  if (!givenForWriting(value)) {
    throw new FerryError(
      'ERR_FERRY_USAGE',
      `--ready-fd ${value}: no such file descriptor open for writing from the caller (e.g. \`ferry host serve --ready-fd 3 3>FILE\`)`,
    );
  }
  return value;
}

/** `--dir HOSTDIR` of the commands that run on a host, from its state directory. */
export const HOST_DIR_OPTION = {
  type: 'string',
  demandOption: true,
  requiresArg: true,
  describe: 'the host state directory made by `ferry host init`',
} as const;

export const hostServeCommand = defineCommand<HostServeArgs>({
  command: 'serve',
  describe: 'run the host agent until SIGTERM or SIGINT (guests keep running); one agent per state directory',
  builder: (yargs) =>
    yargs
      .option('dir', HOST_DIR_OPTION)
      .option('log-file', {
        type: 'string',
        requiresArg: true,
        describe:
          'append the JSON log lines to FILE; without it they go to stderr, or on a terminal a short line when ready and per warning',
      })
      .option('ready-fd', {
        type: 'number',
        requiresArg: true,
        describe: 'write "READY=1\\n" to this file descriptor and close it once the agent listens',
      })
      .option('metrics', {
        type: 'string',
        requiresArg: true,
        describe: 'serve Prometheus metrics as plain HTTP on this HOST:PORT only, at /metrics (e.g. 127.0.0.1:9464)',
      })
      .option('encryption', {
        type: 'boolean',
        default: true,
        describe: 'advertise encryption; --no-encryption stands in for an older host',
      })
      .example('$0 host serve --dir /var/lib/ferry', 'run the agent of the host made in that directory')
      .example('$0 host serve --dir ./a --log-file a.log & $0 host wait a', 'in the background, logs in a file; go on once it answers')
      .example('$0 host serve --dir ./a --ready-fd 3 3>ready', '"READY=1" appears in the file ready once it listens')
      .example('$0 host serve --dir ./b --no-encryption', 'an agent that cannot encrypt (opportunistic guests go plain)')
      .example('$0 host serve --dir ./a --metrics 127.0.0.1:9464', 'and metrics at http://127.0.0.1:9464/metrics'),
  run: async (output, args) => {
    const ready = readyFd(args['ready-fd']);
    const metrics = args.metrics === undefined ? undefined : metricsAddress(args.metrics);
    const { log, close } = openAgentLog({ logFile: args['log-file'], debug: output.debug });
    let agent: Agent;
    try {
      agent = await Agent.start({ dir: args.dir, encryption: args.encryption, log, ...(metrics ? { metrics } : {}) });
    } catch (err) {
      // stderr gets the error line from the entry point; a log file should say why the agent is not running too.
      if (args['log-file'] !== undefined) log.error('agent did not start', { err });
      close();
      throw err;
    }
    if (ready !== null) {
      try {
        writeSync(ready, 'READY=1\n');
      } catch (err) {
        log.warn('could not write to --ready-fd', { fd: ready, err });
      }
      closeSync(ready);
    }
    await new Promise<void>((resolve) => {
      const stop = (signal: NodeJS.Signals) => {
        process.off('SIGTERM', stop);
        process.off('SIGINT', stop);
        log.info('stopping', { signal });
        agent.stop().then(resolve, (err) => {
          log.error('stop failed', { err });
          resolve();
        });
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
    close();
  },
});
