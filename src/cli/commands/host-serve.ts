/** `ferry host serve --dir HOSTDIR`: run the host agent until SIGTERM or SIGINT. */
import { defineCommand } from '../command.js';
import { Agent } from '../../agent/agent.js';
import { createLogger } from '../../common/log.js';
import { metricsAddress } from '../../agent/metrics.js';

export const hostServeCommand = defineCommand<{ dir: string; encryption: boolean; metrics?: string }>({
  command: 'serve',
  describe: 'run the host agent (logs: JSON lines on stderr); SIGTERM stops it, guests keep running',
  builder: (yargs) =>
    yargs
      .option('dir', {
        type: 'string',
        demandOption: true,
        requiresArg: true,
        describe: 'the host state directory made by `ferry host init`',
      })
      .option('encryption', {
        type: 'boolean',
        default: true,
        describe: 'advertise encryption; --no-encryption stands in for an older host',
      })
      .option('metrics', {
        type: 'string',
        requiresArg: true,
        describe: 'serve Prometheus metrics as plain HTTP on this HOST:PORT only, at /metrics (e.g. 127.0.0.1:9464)',
      })
      .example('$0 host serve --dir /var/lib/ferry', 'run the agent of the host made in that directory')
      .example('$0 host serve --dir ./b --no-encryption', 'an agent that cannot encrypt (opportunistic guests go plain)')
      .example('$0 host serve --dir ./a --metrics 127.0.0.1:9464', 'and metrics at http://127.0.0.1:9464/metrics'),
  run: async (output, args) => {
    const metrics = args.metrics === undefined ? undefined : metricsAddress(args.metrics);
    const log = createLogger({ level: output.debug ? 'debug' : 'info' });
    const agent = await Agent.start({ dir: args.dir, encryption: args.encryption, log, ...(metrics ? { metrics } : {}) });
    await new Promise<void>((resolve) => {
      const stop = (signal: NodeJS.Signals) => {
        process.off('SIGTERM', stop);
        process.off('SIGINT', stop);
        log.info('stopping', { signal });
        agent.stop().then(resolve, (err) => {
          log.error('stop failed', { err });
          resolve();
        });
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
  },
});
