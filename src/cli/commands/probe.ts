/** `ferry probe [HOST...]`: what each host can do, and whether its agent needs an upgrade. */
import { defineCommand, ReportedFailure } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError } from '../../errors.js';
import { clusterHost } from '../../coordinator/cluster.js';
import { probeHosts, type HostProbe } from '../../coordinator/probe.js';
import { FERRY_VERSION } from '../../common/version.js';
import { table } from '../table.js';

/** `21.4/23.5 GiB`: free and total memory in the total's unit, narrower than two sizes side by side. */
export function freeOfTotal(free: number, total: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  const i = Math.min(units.length - 1, Math.max(0, Math.floor(Math.log2(Math.max(total, 1)) / 10)));
  const scale = 1024 ** i;
  const digits = i === 0 ? 0 : 1;
  return `${(free / scale).toFixed(digits)}/${(total / scale).toFixed(digits)} ${units[i]}`;
}

/** `7.2.22/tcg` where the host runs QEMU guests, `-` where not (--json says why); `yes` from an agent that does not say with what. */
export function qemuColumn(p: HostProbe): string {
  const q = p.drivers?.qemu;
  if (!q) return p.qemu ? 'yes' : '-';
  if (!q.available) return '-';
  return q.version && q.accelerator ? `${q.version}/${q.accelerator}` : 'yes';
}

export const probeCommand = defineCommand<{ hosts?: string[]; cluster?: string }>({
  command: 'probe [hosts..]',
  describe: "hosts' versions, encryption, crypto speed, networks, memory, guests and limits",
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('hosts', { type: 'string', array: true, describe: 'hosts to probe (default: every host of the cluster)' })
      .example('$0 probe', 'a table of every host')
      .example('$0 probe a b --json', 'one JSON object per host'),
  run: async (output, args) => {
    const cluster = await openCluster(args);
    const hosts =
      args.hosts && args.hosts.length > 0 ? args.hosts.map((h) => clusterHost(cluster, String(h)).name) : [...cluster.hosts.keys()];
    const probes = await probeHosts(cluster, hosts);
    for (const p of probes) output.emit(p as unknown as Record<string, unknown>);
    if (!output.json) {
      const rows = [
        [
          'HOST',
          'AGENT',
          'ENCRYPTS',
          'BACKEND',
          'CPU',
          'SEAL',
          'NETWORKS',
          'FREE/TOTAL',
          'GUESTS',
          'LIMITS OUT/IN',
          'CRYPTO THREADS',
          'QEMU',
        ],
      ];
      for (const p of probes) {
        if (!p.reachable) {
          rows.push([p.host, `unreachable: ${p.error.message}`]);
          continue;
        }
        rows.push([
          p.host,
          `${p.agentVersion}${p.upgradeNeeded ? ` (upgrade: CLI is ${FERRY_VERSION})` : ''}`,
          p.encrypts ? 'yes' : 'NO',
          p.cryptoBackend,
          [p.aesni ? 'AES-NI' : 'no AES-NI', p.vaes ? 'VAES' : ''].filter(Boolean).join('+'),
          p.sealGBps === null ? '-' : `${p.sealGBps.toFixed(2)} GB/s`,
          p.networks.map((n) => `${n.address}${n.answers ? '' : ' (no answer)'}`).join(', '),
          freeOfTotal(p.freeMemoryBytes, p.totalMemoryBytes),
          p.guests.length === 0 ? '-' : p.guests.join(','),
          `${p.limits.outgoing}/${p.limits.incoming}`,
          p.limits.cryptoThreads === null ? 'every core' : `${p.limits.cryptoThreads} (${p.cryptoThreadsPerMigration} per migration)`,
          qemuColumn(p),
        ]);
      }
      for (const line of table(rows)) output.print(line);
    }
    const down = probes.filter((p) => !p.reachable).map((p) => p.host);
    const failure = down.length > 0 ? new FerryError('ERR_FERRY_NETWORK', `could not reach ${down.join(', ')}`) : null;
    output.emit({ type: 'result', ok: failure === null, hosts: probes.length, unreachable: down, error: failure?.toJSON() ?? null });
    if (failure) throw new ReportedFailure(failure.code, failure.message);
  },
});
