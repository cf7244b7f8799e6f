/**
 * One agent per state directory. A second `ferry host serve` on a directory whose agent runs would
 * re-attach to that agent's live guests and fight it for them; it must stop before it reads anything.
 *
 * The lock is a unix socket in Linux's abstract namespace, named after the directory's real path.
 * The kernel holds the name for exactly as long as the process that bound it lives, SIGKILL and
 * power loss included, and binding it is atomic: of two agents starting at once one gets
 * EADDRINUSE. So a lock is never stale and taking over a dead agent's needs no test of a pid
 * (which two restarting agents could both pass). A pid file, and proper-lockfile's mtime-based
 * staleness, leave that window, and the latter keeps a dead agent's lock until its stale period
 * runs out. The holder answers whoever connects with its pid, so the refusal can name it;
 * `agent.pid` in the directory (written atomically) names it for operators and tools.
 *
 * Abstract sockets belong to a network namespace: two agents on one directory from two network
 * namespaces do not see each other's lock (docs/operations.md, "One agent per directory").
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { FerryError } from '../errors.js';
import { removeFileDurably, writeFileAtomic } from '../common/atomic-file.js';

/** How long a refused agent waits for the holder to say its pid before it names the pid file's. */
const ASK_HOLDER_MS = 2000;

export const PID_FILE = 'agent.pid';

function lockName(realDir: string): string {
  return `\0ferry-agent:${createHash('sha256').update(realDir).digest('hex').slice(0, 48)}`;
}

/** The pid the holder of `name` gives, or null when it says nothing in time. */
function askHolder(name: string): Promise<number | null> {
  return new Promise((resolve) => {
    let text = '';
    const socket = net.connect({ path: name });
    const done = (pid: number | null) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(pid);
    };
    const timer = setTimeout(() => done(null), ASK_HOLDER_MS);
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      text += d;
      if (text.length > 100) done(null);
    });
    socket.on('end', () => {
      const m = /^pid (\d+)\n$/.exec(text);
      done(m ? Number(m[1]) : null);
    });
    socket.on('error', () => done(null));
  });
}

async function readPidFile(file: string): Promise<number | null> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  const m = /^(\d+)\n?$/.exec(text);
  return m ? Number(m[1]) : null;
}

export class StateDirLock {
  private constructor(
    private readonly server: net.Server,
    private readonly pidFile: string,
    /** The pid of a dead agent whose pid file this one found (it did not stop cleanly), else null. */
    readonly tookOverFrom: number | null,
  ) {}

  /**
   * Takes the lock of state directory `dir`, or throws ERR_FERRY_REFUSED naming the pid of the
   * agent that holds it. The agent takes it before it reads its state or touches a guest.
   */
  static async acquire(dir: string): Promise<StateDirLock> {
    const real = await fs.realpath(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT')
        throw new FerryError('ERR_FERRY_NOT_FOUND', `${path.resolve(dir)} does not exist: run \`ferry host init\` first`);
      throw new FerryError('ERR_FERRY_INPUT', `cannot open ${path.resolve(dir)}: ${err.code}`);
    });
    const name = lockName(real);
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.end(`pid ${process.pid}\n`);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ path: name }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EADDRINUSE') throw new FerryError('ERR_FERRY_INTERNAL', `cannot lock ${real}: ${code ?? (err as Error).message}`);
      const pid = (await askHolder(name)) ?? (await readPidFile(path.join(real, PID_FILE)));
      throw new FerryError(
        'ERR_FERRY_REFUSED',
        `${real} is in use by another agent (${pid === null ? 'its pid unknown' : `pid ${pid}`}): ` +
          `one agent per state directory; stop that one first${pid === null ? '' : ` (kill ${pid})`}`,
      );
    }
    // Nothing keeps the agent alive for the lock's sake; its listeners do.
    server.unref();
    const pidFile = path.join(real, PID_FILE);
    const previous = await readPidFile(pidFile);
    try {
      await writeFileAtomic(pidFile, `${process.pid}\n`, 0o644);
    } catch (err) {
      server.close();
      throw err;
    }
    return new StateDirLock(server, pidFile, previous !== null && previous !== process.pid ? previous : null);
  }

  /** Lets the directory go: the pid file first, so nobody reads a pid that no longer holds it. */
  async release(): Promise<void> {
    if ((await readPidFile(this.pidFile)) === process.pid) await removeFileDurably(this.pidFile).catch(() => {});
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
