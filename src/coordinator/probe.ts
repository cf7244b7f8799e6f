/**
 * What `ferry probe` learns about a host: versions, encryption, crypto backend and CPU features, a
 * short seal measurement, which migration networks answer a TCP connect from here, memory, guests,
 * limits, what each guest driver runs with. An unreachable host is a result too, not an exception.
 */
import net from 'node:net';
import { toFerryError } from '../errors.js';
import { PROTOCOL_VERSION, type Capabilities, type SealMeasurement } from '../control/protocol.js';
import { FERRY_VERSION } from '../common/version.js';
import { parseAddress } from '../common/address.js';
import type { DriverAvailability } from '../guest/index.js';
import type { Cluster } from './cluster.js';
import { eachHost } from './connect.js';

const NETWORK_TIMEOUT_MS = 2000;

export interface HostProbe {
  type: 'host';
  host: string;
  reachable: true;
  agentVersion: string;
  protocol: number;
  /** The agent is older than this CLI (protocol or version): upgrade it. */
  upgradeNeeded: boolean;
  encrypts: boolean;
  cryptoBackend: string;
  cpuFeatures: string[];
  aesni: boolean;
  vaes: boolean;
  /** Null when the agent has no crypto.measure (older) or it failed. */
  sealGBps: number | null;
  networks: { address: string; answers: boolean }[];
  freeMemoryBytes: number;
  totalMemoryBytes: number;
  guests: string[];
  /** cryptoThreads null: the host sets no crypto-thread budget (every core for each migration). */
  limits: { outgoing: number; incoming: number; cryptoThreads: number | null };
  /** Each migration's share of limits.cryptoThreads; null: every core. */
  cryptoThreadsPerMigration: number | null;
  running: Capabilities['running'];
  queued: Capabilities['queued'];
  hasSriov: boolean;
  /** Whether the host can run QEMU guests. */
  qemu: boolean;
  /** Each guest driver's availability there (QEMU: its version and accelerator); null from agents before drivers. */
  drivers: Record<string, DriverAvailability> | null;
}

export interface UnreachableHost {
  type: 'host';
  host: string;
  reachable: false;
  error: { code: string; message: string };
}

/** -1, 0, 1 for dotted versions (`0.1.0`); pre-release suffixes are ignored. */
export function compareVersions(a: string, b: string): number {
  const parts = (v: string) =>
    v
      .split('-')[0]!
      .split('.')
      .map((n) => Number(n) || 0);
  const x = parts(a);
  const y = parts(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

/** Whether something accepts a TCP connection at `address` (the agent's data listener drops it unheard). */
function answers(address: string): Promise<boolean> {
  const { host, port } = parseAddress(address);
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), NETWORK_TIMEOUT_MS);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export async function probeHosts(cluster: Cluster, hosts: readonly string[]): Promise<(HostProbe | UnreachableHost)[]> {
  const answersByHost = await eachHost(cluster, hosts, async (client, name): Promise<HostProbe> => {
    const caps = await client.call('capabilities', {});
    const [guests, seal] = await Promise.all([
      client.call('guest.list', {}),
      client.call('crypto.measure', {}).catch((): SealMeasurement | null => null),
    ]);
    const advertised = cluster.hosts.get(name)!.networks.map((n) => n.advertise);
    const networks = await Promise.all(advertised.map(async (address) => ({ address, answers: await answers(address) })));
    return {
      type: 'host',
      host: name,
      reachable: true,
      agentVersion: client.agent.agentVersion,
      protocol: client.agent.protocol,
      upgradeNeeded: client.agent.protocol < PROTOCOL_VERSION || compareVersions(client.agent.agentVersion, FERRY_VERSION) < 0,
      encrypts: caps.encrypts,
      cryptoBackend: caps.cryptoBackend,
      cpuFeatures: caps.cpuFeatures,
      aesni: caps.cpuFeatures.includes('aes'),
      vaes: caps.cpuFeatures.includes('vaes'),
      sealGBps: seal?.sealGBps ?? null,
      networks,
      freeMemoryBytes: caps.freeMemoryBytes,
      totalMemoryBytes: caps.totalMemoryBytes,
      guests: guests.guests.map((g) => g.name).sort(),
      limits: { outgoing: caps.limits.outgoing, incoming: caps.limits.incoming, cryptoThreads: caps.limits.cryptoThreads ?? null },
      cryptoThreadsPerMigration: caps.cryptoThreadsPerMigration ?? null,
      running: caps.running,
      queued: caps.queued,
      hasSriov: caps.hasSriov,
      qemu: caps.qemu,
      drivers: caps.drivers ?? null,
    };
  });
  return hosts.map((host) => {
    const outcome = answersByHost.get(host)!;
    return outcome.ok ? outcome.value : { type: 'host', host, reachable: false, error: toFerryError(outcome.error).toJSON() };
  });
}
