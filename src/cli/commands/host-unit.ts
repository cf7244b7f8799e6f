/**
 * `ferry host unit --dir HOSTDIR`: a systemd unit that runs the host's agent, printed on stdout.
 *
 * Type=simple with `ferry host wait --dir` as ExecStartPost, not Type=notify: sd_notify is a
 * datagram on a unix socket, which Node cannot send without a native module, so the unit counts as
 * started once the agent answers on its control API. KillMode=process because the guests are the
 * agent's children in its cgroup but outlive it: stopping or restarting the agent must not kill them.
 */
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { defineCommand } from '../command.js';
import { FerryError } from '../../errors.js';
import { parseDuration } from '../../common/units.js';
import { StateDir } from '../../agent/state.js';
import { HOST_DIR_OPTION } from './host-serve.js';

const BIN = fileURLToPath(new URL('../../../bin/ferry', import.meta.url));

/** One word of a systemd command line: `%` doubled (specifiers), quoted when it has space, quotes or backslashes. */
export function unitWord(word: string): string {
  const escaped = word.replace(/%/g, '%%');
  return /[\s"'\\;$]/.test(escaped) ? `"${escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"` : escaped;
}

const command = (args: string[]) => args.map(unitWord).join(' ');

export function agentUnit(options: { host: string; dir: string; node: string; bin: string; waitSeconds: number }): string {
  const ferry = [options.node, options.bin];
  return [
    `# ferry host agent of host ${options.host}, written by \`ferry host unit --dir ${options.dir}\`. To install it:`,
    `#   ferry host unit --dir ${options.dir} > /etc/systemd/system/ferry-agent-${options.host}.service`,
    `#   systemctl daemon-reload && systemctl enable --now ferry-agent-${options.host}`,
    '[Unit]',
    `Description=ferry host agent (host ${options.host})`,
    'After=network-online.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    '# Started once the agent answers on its control API (Node sends no sd_notify without a native module).',
    'Type=simple',
    `ExecStart=${command([...ferry, 'host', 'serve', '--dir', options.dir])}`,
    `ExecStartPost=${command([...ferry, 'host', 'wait', '--dir', options.dir, '--timeout', `${options.waitSeconds}s`])}`,
    `TimeoutStartSec=${options.waitSeconds + 30}`,
    '# The guests outlive the agent: stopping or restarting it must not kill them.',
    'KillMode=process',
    'Restart=on-failure',
    'RestartSec=2s',
    '# JSON log lines on stderr, which is not a terminal here: they go to the journal.',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

export const hostUnitCommand = defineCommand<{ dir: string; 'start-timeout': string }>({
  command: 'unit',
  describe: "print a systemd unit that runs a host's agent",
  builder: (yargs) =>
    yargs
      .option('dir', HOST_DIR_OPTION)
      .option('start-timeout', {
        type: 'string',
        default: '60s',
        requiresArg: true,
        describe: 'how long systemd waits for the agent to answer before it counts the start as failed',
      })
      .example('$0 host unit --dir /var/lib/ferry > /etc/systemd/system/ferry-agent.service', 'install the unit')
      .example('systemctl enable --now ferry-agent && journalctl -u ferry-agent -f', 'then start it and read its log'),
  run: async (output, args) => {
    let waitMs: number;
    try {
      waitMs = parseDuration(args['start-timeout'], '--start-timeout');
    } catch (err) {
      throw new FerryError('ERR_FERRY_USAGE', (err as Error).message);
    }
    if (waitMs < 1000) throw new FerryError('ERR_FERRY_USAGE', `--start-timeout: ${args['start-timeout']} is less than 1s`);
    const dir = path.resolve(args.dir);
    const config = await StateDir.readConfig(dir);
    const unit = agentUnit({ host: config.name, dir, node: process.execPath, bin: BIN, waitSeconds: Math.ceil(waitMs / 1000) });
    output.text(unit);
    output.emit({ type: 'result', ok: true, host: config.name, dir, unit });
  },
});
