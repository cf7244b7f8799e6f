/**
 * Shell completion: `ferry completion` prints the script (bash, or zsh), which then asks
 * `ferry --get-yargs-completions WORDS...` at each Tab. Beyond yargs' own commands and flags, the
 * words that name a host complete from the cluster file, and those that name a guest from the
 * agents, asked with a short timeout: completion is silent and quick when a host does not answer.
 */
import yargs from 'yargs';
import { defineCommand } from './command.js';
import { clusterPath, loadCluster, type Cluster } from '../coordinator/cluster.js';
import { connectHost, coordinatorCredentials } from '../coordinator/connect.js';

/** The flag yargs' completion script calls ferry with. */
export const COMPLETION_FLAG = '--get-yargs-completions';
/** The name yargs knows the completion under; `ferry completion` itself is an ordinary command (with --help). */
export const HIDDEN_COMPLETION_COMMAND = '__completion';

/** Each agent gets this long to list its guests, connection included. */
const ASK_MS = 800;

const HOST_FLAGS = new Set(['--to', '--host', '--from']);
/** Commands whose first positional is a guest, or a host (by the words that lead to it). */
const GUEST_FIRST = new Set(['migrate', 'cancel', 'resolve', 'vm show', 'vm destroy', 'vm set', 'vm console']);
const HOST_FIRST = new Set(['evacuate', 'host wait', 'host remove']);
const HOSTS_ALL = new Set(['probe']);

type What = 'hosts' | 'guests' | null;

/** What the word being completed names, from the words before it (`ferry` not among them). */
export function completing(words: readonly string[]): What {
  const before = words.slice(0, -1);
  const previous = before.at(-1);
  if (previous !== undefined && HOST_FLAGS.has(previous)) return 'hosts';
  if (words.at(-1)?.startsWith('-')) return null;
  const positionals = before.filter(
    (w, i) => !w.startsWith('-') && !(i > 0 && before[i - 1]!.startsWith('--') && !isBoolean(before[i - 1]!)),
  );
  for (const n of [2, 1]) {
    const command = positionals.slice(0, n).join(' ');
    const rest = positionals.length - n;
    if (positionals.length < n) continue;
    if (GUEST_FIRST.has(command)) return rest === 0 ? 'guests' : null;
    if (HOST_FIRST.has(command)) return rest === 0 ? 'hosts' : null;
    if (HOSTS_ALL.has(command)) return 'hosts';
  }
  return null;
}

/** Flags that take no value: the word after one is a positional. */
function isBoolean(flag: string): boolean {
  return ['--json', '--debug', '--verify', '--wide', '--watch', '--dry-run', '--remove-source-disks', '--shared-storage'].includes(flag);
}

function clusterOf(words: readonly string[]): Promise<Cluster> {
  const i = words.indexOf('--cluster');
  return loadCluster(clusterPath(i >= 0 ? words[i + 1] : undefined));
}

/** The guests every agent that answers in time runs; an agent that does not is left out, silently. */
async function guestNames(cluster: Cluster): Promise<string[]> {
  const credentials = await coordinatorCredentials(cluster);
  const lists = await Promise.all(
    [...cluster.hosts.keys()].map(async (host) => {
      try {
        const client = await connectHost(cluster, host, credentials, ASK_MS);
        try {
          return (await client.call('guest.list', {}, { timeoutMs: ASK_MS })).guests.map((g) => g.name);
        } finally {
          client.close();
        }
      } catch {
        return [];
      }
    }),
  );
  return [...new Set(lists.flat())].sort();
}

/**
 * Host and guest names for the shell's Tab, when `argv` (ferry's whole command line: COMPLETION_FLAG,
 * the program's name, the words, the current one last) asks for one of those; null for yargs' own
 * completion of commands and flags.
 */
export function completeFromArgv(argv: readonly string[]): Promise<string[] | null> {
  return completeNames(argv.slice(argv.indexOf(COMPLETION_FLAG) + 2));
}

/** The names for the word being completed (`words`: what follows `ferry`, the current word last), or null for yargs' own. */
export async function completeNames(words: readonly string[]): Promise<string[] | null> {
  const what = completing(words);
  if (what === null) return null;
  const current = words.at(-1) ?? '';
  try {
    const cluster = await clusterOf(words);
    const names = what === 'hosts' ? [...cluster.hosts.keys()] : await guestNames(cluster);
    return names.filter((n) => n.startsWith(current));
  } catch {
    return []; // no cluster file, or one that does not load: nothing to offer
  }
}

export const completionCommand = defineCommand<object>({
  command: 'completion',
  describe: 'print a shell completion script (bash/zsh): commands, flags, host and guest names',
  builder: (y) =>
    y
      .example('$0 completion >> ~/.bashrc', 'bash: Tab completes commands, flags, hosts (cluster file) and guests (agents)')
      .example('$0 completion >> ~/.zshrc', 'zsh, the same')
      .epilogue(
        'Host names come from the cluster file (--cluster or $FERRY_CLUSTER); guest names from the agents that answer within a second.',
      ),
  run: async () => {
    // yargs writes the script, for the shell it finds in $SHELL, to stdout.
    yargs([]).scriptName('ferry').completion('completion', false).showCompletionScript();
  },
});
