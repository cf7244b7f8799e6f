/** `ferry pki init --dir DIR`: a new cluster — CA, coordinator certificate, DIR/cluster.yaml. */
import type { Argv, CommandModule } from 'yargs';
import { defineCommand } from '../command.js';
import { initPki } from '../../coordinator/pki.js';

const pkiInit = defineCommand<{ dir: string }>({
  command: 'init',
  describe: 'create a cluster: CA, coordinator certificate and DIR/cluster.yaml',
  builder: (yargs) =>
    yargs
      .option('dir', { type: 'string', demandOption: true, requiresArg: true, describe: 'an empty or new directory (made 0700)' })
      .example('$0 pki init --dir ~/ferry', 'then: export FERRY_CLUSTER=~/ferry/cluster.yaml'),
  run: async (output, args) => {
    const p = await initPki(args.dir);
    output.print(`cluster CA, coordinator certificate and ${p.clusterFile} created`);
    output.print(`next: export FERRY_CLUSTER=${p.clusterFile}; ferry host init NAME --dir HOSTDIR --control ADDR --network ADDR`);
    output.emit({ type: 'result', ok: true, dir: p.dir, clusterFile: p.clusterFile, caCert: p.caCert, coordinatorCert: p.coordinatorCert });
  },
});

export const pkiCommand: CommandModule = {
  command: 'pki <command>',
  describe: "the cluster's certificates",
  builder: (yargs: Argv) => yargs.command(pkiInit as CommandModule).demandCommand(1, 'name a pki command: see `ferry pki --help`'),
  handler: () => {},
};
