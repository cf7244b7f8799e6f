/**
 * Where `--to` points: a host of this cluster (`b`), or a host of another cluster given by its
 * cluster file (`../west/cluster.yaml:b`). Host names are DNS labels and never contain `:`, so the
 * last `:` separates the file from the host. Each agent is then reached through its own cluster's
 * CA and coordinator certificate.
 */
import path from 'node:path';
import { FerryError } from '../errors.js';
import { HOST_NAME } from '../common/names.js';
import { clusterHost, loadCluster, type Cluster, type ClusterHost } from './cluster.js';

export interface Target {
  cluster: Cluster;
  host: ClusterHost;
  /** True when the host belongs to another cluster than the source. */
  crossCluster: boolean;
  /** As the operator wrote it, for messages. */
  label: string;
}

export async function resolveTarget(source: Cluster, text: string, option = '--to'): Promise<Target> {
  const i = text.lastIndexOf(':');
  const file = i > 0 ? text.slice(0, i) : null;
  const name = i >= 0 ? text.slice(i + 1) : text;
  if (!HOST_NAME.test(name)) {
    throw new FerryError('ERR_FERRY_USAGE', `${option}: "${text}" is not HOST or CLUSTER_FILE:HOST`);
  }
  const cluster = file === null ? source : await loadCluster(path.resolve(file));
  const crossCluster = cluster.file !== source.file;
  return { cluster, host: clusterHost(cluster, name), crossCluster, label: crossCluster ? `${cluster.file}:${name}` : name };
}
