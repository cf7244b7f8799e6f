/**
 * `ferry host wait NAME | --dir HOSTDIR [--timeout 30s]`: returns once the host's agent answers on
 * its control API (a TLS handshake and hello with the cluster's certificates), for scripts after a
 * backgrounded `ferry host serve` and for systemd's ExecStartPost. By NAME it asks as the
 * coordinator (the cluster file); with --dir as the host itself (its own certificate), so it runs
 * on a host that has no cluster file.
 */
import { defineCommand } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError, toFerryError } from '../../errors.js';
import { parseDuration, formatDuration } from '../../common/units.js';
import { formatAddress, parseAddress } from '../../common/address.js';
import { sleep } from '../../common/async.js';
import { HOST_NAME } from '../../common/names.js';
import { clusterHost } from '../../coordinator/cluster.js';
import { coordinatorCredentials } from '../../coordinator/connect.js';
import { AgentClient } from '../../control/client.js';
import type { TlsCredentials } from '../../control/tls.js';
import { StateDir } from '../../agent/state.js';
import { FERRY_VERSION } from '../../common/version.js';

interface HostWaitArgs {
  name?: string;
  dir?: string;
  timeout: string;
  cluster?: string;
}

const RETRY_MS = 200;

/** What to connect to, and as whom. */
interface Target {
  host: string;
  address: string;
  credentials: TlsCredentials;
}

async function target(args: HostWaitArgs): Promise<Target> {
  if (args.name !== undefined && args.dir !== undefined)
    throw new FerryError('ERR_FERRY_USAGE', 'give a host NAME or --dir HOSTDIR, not both');
  if (args.dir !== undefined) {
    const config = await StateDir.readConfig(args.dir);
    const control = parseAddress(config.control, 'control address', { allowPortZero: true });
    if (control.port === 0)
      throw new FerryError(
        'ERR_FERRY_INPUT',
        `host ${config.name} listens on port 0 (the kernel picks one): there is no address to wait on`,
      );
    // An agent listening on every interface answers on loopback.
    const host = control.host === '0.0.0.0' ? '127.0.0.1' : control.host === '::' ? '::1' : control.host;
    return { host: config.name, address: formatAddress({ host, port: control.port }), credentials: await StateDir.credentials(args.dir) };
  }
  if (args.name === undefined) throw new FerryError('ERR_FERRY_USAGE', 'name the host to wait for, or give --dir HOSTDIR');
  if (!HOST_NAME.test(args.name)) throw new FerryError('ERR_FERRY_USAGE', `"${args.name}" is not a host name`);
  const cluster = await openCluster(args);
  const host = clusterHost(cluster, args.name);
  return { host: host.name, address: host.control, credentials: await coordinatorCredentials(cluster) };
}

/** Only a host that is not there yet is worth waiting for; a certificate it refuses stays refused. */
const WORTH_WAITING = new Set(['ERR_FERRY_NETWORK', 'ERR_FERRY_TIMEOUT']);

export const hostWaitCommand = defineCommand<HostWaitArgs>({
  command: 'wait [name]',
  describe: "wait until a host's agent answers on its control API",
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('name', { type: 'string', describe: 'the host, as the cluster file names it' })
      .option('dir', {
        type: 'string',
        requiresArg: true,
        describe: "the host's state directory instead: asks with the host's own certificate (no cluster file needed)",
      })
      .option('timeout', { type: 'string', default: '30s', requiresArg: true, describe: 'how long to wait: 500ms, 30s, 2m' })
      .example('$0 host serve --dir ./a --log-file a.log & $0 host wait a', 'start an agent in the background, go on once it answers')
      .example('$0 host wait --dir /var/lib/ferry --timeout 2m', "on the host itself (systemd's ExecStartPost)"),
  run: async (output, args) => {
    let timeoutMs: number;
    try {
      timeoutMs = parseDuration(args.timeout, '--timeout');
    } catch (err) {
      throw new FerryError('ERR_FERRY_USAGE', (err as Error).message);
    }
    const t = await target(args);
    const started = performance.now();
    const deadline = started + timeoutMs;
    let last: FerryError | null = null;
    for (;;) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      try {
        const client = await AgentClient.connect({
          ...t,
          client: `ferry-cli ${FERRY_VERSION} (host wait)`,
          timeoutMs: Math.max(100, Math.min(left, 5000)),
        });
        const { agentVersion } = client.agent;
        client.close();
        const ms = Math.round(performance.now() - started);
        output.print(`host ${t.host} answers at ${t.address} (ferry ${agentVersion}) after ${formatDuration(ms)}`);
        output.emit({ type: 'result', ok: true, host: t.host, control: t.address, agentVersion, waitedMs: ms });
        return;
      } catch (err) {
        last = toFerryError(err);
        if (!WORTH_WAITING.has(last.code)) throw last;
      }
      await sleep(Math.min(RETRY_MS, Math.max(0, deadline - performance.now())));
    }
    throw new FerryError(
      'ERR_FERRY_TIMEOUT',
      `host ${t.host} did not answer at ${t.address} within ${args.timeout}${last ? ` (last: ${last.message})` : ''}`,
    );
  },
});
