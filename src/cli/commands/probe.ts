/** `ferry probe [HOST...]`: what each host can do, and whether its agent needs an upgrade. */
import { defineCommand, ReportedFailure } from '../command.js';
import { withClusterOption, openCluster } from '../cluster-option.js';
import { FerryError } from '../../errors.js';
import { clusterHost } from '../../coordinator/cluster.js';
import { probeHosts, type HostProbe, type UnreachableHost } from '../../coordinator/probe.js';
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

/** The columns of the probe table: every one with --wide, else those that fit 120 columns. */
const COLUMNS: { head: string; narrow: boolean; cell: (p: HostProbe, wide: boolean) => string }[] = [
  { head: 'HOST', narrow: true, cell: (p) => p.host },
  {
    head: 'AGENT',
    narrow: true,
    cell: (p, wide) => `${p.agentVersion}${p.upgradeNeeded ? (wide ? ` (upgrade: CLI is ${FERRY_VERSION})` : ' (upgrade)') : ''}`,
  },
  { head: 'ENCRYPTS', narrow: true, cell: (p) => (p.encrypts ? 'yes' : 'NO') },
  { head: 'BACKEND', narrow: true, cell: (p) => p.cryptoBackend },
  { head: 'CPU', narrow: false, cell: (p) => [p.aesni ? 'AES-NI' : 'no AES-NI', p.vaes ? 'VAES' : ''].filter(Boolean).join('+') },
  { head: 'SEAL', narrow: true, cell: (p) => (p.sealGBps === null ? '-' : `${p.sealGBps.toFixed(2)} GB/s`) },
  {
    head: 'NETWORKS',
    narrow: true,
    cell: (p, wide) =>
      wide
        ? p.networks.map((n) => `${n.address}${n.answers ? '' : ' (no answer)'}`).join(', ')
        : `${p.networks.filter((n) => n.answers).length}/${p.networks.length} answer`,
  },
  { head: 'FREE/TOTAL', narrow: true, cell: (p) => freeOfTotal(p.freeMemoryBytes, p.totalMemoryBytes) },
  { head: 'GUESTS', narrow: true, cell: (p, wide) => (p.guests.length === 0 ? '-' : wide ? p.guests.join(',') : String(p.guests.length)) },
  { head: 'LIMITS OUT/IN', narrow: false, cell: (p) => `${p.limits.outgoing}/${p.limits.incoming}` },
  {
    head: 'CRYPTO THREADS',
    narrow: false,
    cell: (p) =>
      p.limits.cryptoThreads === null ? 'every core' : `${p.limits.cryptoThreads} (${p.cryptoThreadsPerMigration} per migration)`,
  },
  { head: 'QEMU', narrow: true, cell: (p) => qemuColumn(p) },
];

/** The probe as people read it: a table of the hosts that answered, then one line per host that did not. */
export function probeTable(probes: readonly (HostProbe | UnreachableHost)[], wide: boolean): string[] {
  const columns = COLUMNS.filter((c) => wide || c.narrow);
  const rows = [columns.map((c) => c.head)];
  const down: string[] = [];
  for (const p of probes) {
    if (p.reachable) rows.push(columns.map((c) => c.cell(p, wide)));
    else down.push(`${p.host}: unreachable: ${p.error.message}`);
  }
  return [...(rows.length > 1 ? table(rows) : []), ...down];
}

export const probeCommand = defineCommand<{ hosts?: string[]; cluster?: string; wide: boolean }>({
  command: 'probe [hosts..]',
  describe: "hosts' versions, encryption, crypto speed, networks, memory, guests and limits",
  builder: (yargs) =>
    withClusterOption(yargs)
      .positional('hosts', { type: 'string', array: true, describe: 'hosts to probe (default: every host of the cluster)' })
      .option('wide', {
        type: 'boolean',
        default: false,
        describe: 'every column: CPU features, each network, guest names, limits, crypto threads',
      })
      .example('$0 probe', 'a table of every host that fits 120 columns')
      .example('$0 probe --wide', 'every column')
      .example('$0 probe a b --json', 'one JSON object per host'),
  run: async (output, args) => {
    const cluster = await openCluster(args);
    const hosts =
      args.hosts && args.hosts.length > 0 ? args.hosts.map((h) => clusterHost(cluster, String(h)).name) : [...cluster.hosts.keys()];
    const probes = await probeHosts(cluster, hosts);
    for (const p of probes) output.emit(p as unknown as Record<string, unknown>);
    if (!output.json) for (const line of probeTable(probes, args.wide)) output.print(line);
    const down = probes.filter((p) => !p.reachable).map((p) => p.host);
    const failure = down.length > 0 ? new FerryError('ERR_FERRY_NETWORK', `could not reach ${down.join(', ')}`) : null;
    output.emit({ type: 'result', ok: failure === null, hosts: probes.length, unreachable: down, error: failure?.toJSON() ?? null });
    if (failure) throw new ReportedFailure(failure.code, failure.message);
  },
});
