/** Finding which host runs a guest: every host of the cluster is asked at once. */
import { FerryError } from '../errors.js';
import type { AgentClient } from '../control/client.js';
import type { GuestInfo } from '../control/protocol.js';
import type { Cluster } from './cluster.js';
import { eachHost } from './connect.js';

export interface LocatedGuest {
  host: string;
  guest: GuestInfo;
}

/**
 * The host that runs guest `name`. A guest half-way into a host (state `incoming`) does not count
 * while another host runs it. Throws ERR_FERRY_NOT_FOUND when no host has it, and ERR_FERRY_NETWORK
 * when it is on no reachable host but some host could not be asked.
 */
export async function locateGuest(cluster: Cluster, name: string, hosts = [...cluster.hosts.keys()]): Promise<LocatedGuest> {
  const answers = await eachHost(cluster, hosts, (client: AgentClient) => client.call('guest.get', { name }));
  const found: LocatedGuest[] = [];
  const unreachable: string[] = [];
  for (const [host, outcome] of answers) {
    if (outcome.ok) found.push({ host, guest: outcome.value });
    else if (outcome.error.code !== 'ERR_FERRY_NOT_FOUND') unreachable.push(`${host} (${outcome.error.message})`);
  }
  const settled = found.filter((f) => f.guest.state !== 'incoming');
  const pick = settled[0] ?? found[0];
  if (pick) return pick;
  if (unreachable.length > 0) {
    throw new FerryError('ERR_FERRY_NETWORK', `guest "${name}" is on no host that answered; could not ask ${unreachable.join(', ')}`);
  }
  throw new FerryError('ERR_FERRY_NOT_FOUND', `no guest "${name}" on any host of ${cluster.file}`);
}
