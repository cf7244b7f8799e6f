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
 * while another host runs it, and a stale copy (a lower generation than another host's: a state
 * directory restored from before the guest moved on) never counts while the newer one answers. Throws ERR_FERRY_NOT_FOUND when no host has it, and ERR_FERRY_NETWORK
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
  const pick = newest(settled.length > 0 ? settled : found);
  if (pick) return pick;
  if (unreachable.length > 0) {
    throw new FerryError('ERR_FERRY_NETWORK', `guest "${name}" is on no host that answered; could not ask ${unreachable.join(', ')}`);
  }
  throw new FerryError('ERR_FERRY_NOT_FOUND', `no guest "${name}" on any host of ${cluster.file}`);
}

const generationOf = (g: GuestInfo) => g.generation ?? 0;

/** Of several hosts' copies of one guest: the newest generation, and of equal ones a running copy first. */
function newest(copies: LocatedGuest[]): LocatedGuest | undefined {
  return [...copies].sort(
    (x, y) => generationOf(y.guest) - generationOf(x.guest) || Number(y.guest.state === 'running') - Number(x.guest.state === 'running'),
  )[0];
}

/**
 * The stale copies among every host's guests: a copy of a guest that another host holds at a
 * higher generation, and that does not run itself (a running copy is never called stale; two
 * running copies would be a fault no generation settles). Each maps to the newer copy's host and
 * generation.
 */
export function staleCopies(guests: GuestInfo[]): Map<GuestInfo, { newerOn: string; generation: number }> {
  const stale = new Map<GuestInfo, { newerOn: string; generation: number }>();
  const byName = new Map<string, GuestInfo[]>();
  for (const g of guests) byName.set(g.name, [...(byName.get(g.name) ?? []), g]);
  for (const copies of byName.values()) {
    const top = copies.reduce((a, b) => (generationOf(b) > generationOf(a) ? b : a));
    for (const g of copies)
      if (generationOf(g) < generationOf(top) && g.state !== 'running') stale.set(g, { newerOn: top.host, generation: generationOf(top) });
  }
  return stale;
}
