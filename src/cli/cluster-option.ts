/** The `--cluster FILE` option every cluster command takes (default: $FERRY_CLUSTER). */
import type { Argv } from 'yargs';
import { clusterPath, loadCluster, CLUSTER_ENV, type Cluster } from '../coordinator/cluster.js';

export function withClusterOption<T>(yargs: Argv<T>) {
  return yargs.option('cluster', {
    type: 'string',
    describe: `the cluster file (default: $${CLUSTER_ENV})`,
    requiresArg: true,
  });
}

export function openCluster(args: { cluster?: string }): Promise<Cluster> {
  return loadCluster(clusterPath(args.cluster));
}
