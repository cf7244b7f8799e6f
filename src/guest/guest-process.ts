/**
 * The guest process, for any driver: `node ENTRY GUESTDIR [--incoming]`, spawned detached by its
 * agent (process.ts) with stdio to GUESTDIR/guest.log, so that it outlives the agent. This module
 * is everything such a process does that is not about its kind of guest: it reads and checks
 * GUESTDIR/guest.json, keeps GUESTDIR/guest.pid, answers on GUESTDIR/control.sock, takes data
 * sockets over its IPC channel, minds its signals and leaves no file behind when it exits.
 *
 * A driver's entry is a few lines; everything about its guest is the driver's:
 *
 *   runGuestProcess('synthetic', (ctx) => new SyntheticGuestProcess(ctx));
 *
 * Importing this module does nothing; runGuestProcess runs the process.
 */
import { readFileSync, rmSync, unlinkSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { basename, join } from 'node:path';
import { writeFileAtomicSync } from '../common/atomic-file.js';
import { onCryptoFallback } from '../crypto/index.js';
import { FerryError } from '../errors.js';
import { checkGuestConfig } from './config.js';
import { claimControlPath, listenControl, type GuestHandlers } from './control-server.js';
import { CONFIG_FILE, CONTROL_SOCKET, PID_FILE } from './files.js';
import { PROTOCOL_VERSION } from './protocol.js';
import type { GuestConfig, GuestDriverName } from './types.js';

/** The config of driver D's guests. */
export type ConfigOf<D extends GuestDriverName> = Extract<GuestConfig, { driver: D }>;

/** What the scaffold gives a driver's guest process. */
export interface GuestProcessContext<C extends GuestConfig = GuestConfig> {
  /** The guest directory. */
  readonly dir: string;
  /** GUESTDIR/guest.json, checked. */
  readonly config: C;
  /** Started with --incoming: to receive a migration, not to run the guest until it commits. */
  readonly incoming: boolean;
  /** One timestamped line on stderr (GUESTDIR/guest.log). */
  log(message: string): void;
  /**
   * From now on the data sockets the agent hands over (with the bytes its router already read)
   * go to `adopt`, those that came before first. Until then an incoming process holds a few, and
   * any other closes them.
   */
  adoptDataSockets(adopt: (socket: Socket, head: Uint8Array) => void): void;
  /**
   * Ends the process, once: closes the guest (the driver's close), the control socket, removes the
   * socket and pid files (and the whole directory with removeDir), and lets the last reply out.
   */
  exit(code: number, options?: { removeDir?: boolean }): Promise<void>;
}

/** The methods the scaffold answers itself: who this is, and the two ways out. */
type ScaffoldMethod = 'hello' | 'stop' | 'destroy';

/** What a driver's guest process gives the scaffold. */
export interface GuestProcessDriver {
  /** The control protocol's handlers (protocol.ts), but hello, stop and destroy. */
  readonly handlers: Omit<GuestHandlers, ScaffoldMethod>;
  /** What the start-up line says of the guest, e.g. "16777216 bytes memory, 0 bytes disk". */
  readonly summary: string;
  /**
   * Why the guest must not stop now (a migration out running or unresolved: stopping in doubt
   * could leave it running nowhere), or null. While it says why, stop, destroy and SIGTERM are refused.
   */
  busy(): string | null;
  /**
   * stop and destroy: ends what would outlive this process (a QEMU), before the reply. Without it,
   * the guest is this process and ends with it.
   */
  stop?(): Promise<void>;
  /**
   * Lets go of the guest as the process ends, whatever the reason (stop, destroy, SIGTERM, the
   * driver's own ctx.exit); called once. A guest that outlives its process keeps running unless
   * stop() ended it: SIGTERM ends only the process.
   */
  close(): Promise<void>;
}

/** An incoming guest process nobody prepared (its agent died between spawn and prepare) has no future. */
const UNPREPARED_EXIT_MS = 60_000;
/** Data sockets an incoming process holds before prepare-incoming: one migration's streams, and a few more. */
const MAX_EARLY_SOCKETS = 16;
/** How long the last reply has to reach the agent before the process goes. */
const LAST_REPLY_MS = 50;

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} ${message}\n`);
}

class GuestProcess<C extends GuestConfig> implements GuestProcessContext<C> {
  private driver: GuestProcessDriver | null = null;
  private server: Server | null = null;
  private exiting = false;
  /** prepare-incoming calls that passed their checks (the unprepared exit waits for none). */
  private prepareCalls = 0;
  private adopt: ((socket: Socket, head: Uint8Array) => void) | null = null;
  private readonly earlySockets: Array<{ socket: Socket; head: Uint8Array }> = [];

  constructor(
    readonly dir: string,
    readonly config: C,
    readonly incoming: boolean,
  ) {}

  log(message: string): void {
    log(message);
  }

  adoptDataSockets(adopt: (socket: Socket, head: Uint8Array) => void): void {
    this.adopt = adopt;
    for (const { socket, head } of this.earlySockets.splice(0)) adopt(socket, head);
  }

  async exit(code: number, options: { removeDir?: boolean } = {}): Promise<void> {
    if (this.exiting) return;
    this.exiting = true;
    try {
      await this.driver?.close();
    } catch (err) {
      log(`closing the guest failed: ${(err as Error).message}`);
    }
    this.server?.close();
    for (const f of [CONTROL_SOCKET, PID_FILE]) {
      try {
        unlinkSync(join(this.dir, f));
      } catch {
        // already gone
      }
    }
    if (options.removeDir) rmSync(this.dir, { recursive: true, force: true });
    log(`guest process exits (${code})`);
    setTimeout(() => process.exit(code), LAST_REPLY_MS);
  }

  async start(driver: GuestProcessDriver): Promise<void> {
    this.driver = driver;
    process.on('SIGTERM', () => {
      const why = driver.busy();
      if (why !== null) {
        log(`SIGTERM ignored: ${why}`);
        return;
      }
      void this.exit(0);
    });
    if (this.incoming) {
      setTimeout(() => {
        if (this.prepareCalls > 0) return;
        log(`no migration prepared within ${UNPREPARED_EXIT_MS} ms: exiting`);
        void this.exit(1);
      }, UNPREPARED_EXIT_MS);
    }
    this.server = await listenControl(join(this.dir, CONTROL_SOCKET), this.handlers(driver));
    writeFileAtomicSync(join(this.dir, PID_FILE), `${process.pid}\n`);
    log(`guest ${this.config.name} up: pid ${process.pid}, ${driver.summary}, ${this.incoming ? 'incoming' : 'running'}`);
  }

  private handlers(driver: GuestProcessDriver): GuestHandlers {
    const refuseIfBusy = (): void => {
      const why = driver.busy();
      if (why !== null) throw new FerryError('ERR_FERRY_REFUSED', `${why}: resolve it first`);
    };
    const prepare = driver.handlers['prepare-incoming'];
    return {
      ...driver.handlers,
      hello: () => ({ protocol: PROTOCOL_VERSION, pid: process.pid, name: this.config.name, incoming: this.incoming }),
      stop: async () => {
        refuseIfBusy();
        await driver.stop?.();
        void this.exit(0);
        return { stopped: true as const };
      },
      destroy: async () => {
        refuseIfBusy();
        await driver.stop?.();
        void this.exit(0, { removeDir: true });
        return { destroyed: true as const };
      },
      'prepare-incoming': (params, ctx) => {
        this.prepareCalls++;
        return prepare(params, ctx);
      },
    };
  }

  /** A data socket from the agent (its router accepted it for this guest's migration). */
  onDataSocket(socket: Socket, head: Uint8Array): void {
    if (this.adopt) this.adopt(socket, head);
    else if (this.incoming && this.earlySockets.length < MAX_EARLY_SOCKETS) this.earlySockets.push({ socket, head });
    else socket.destroy();
  }
}

function parseArgs(argv: string[]): { dir: string; incoming: boolean } | null {
  const [dir, ...flags] = argv;
  if (!dir || dir.startsWith('-') || flags.some((f) => f !== '--incoming')) return null;
  return { dir, incoming: flags.includes('--incoming') };
}

function readConfig<D extends GuestDriverName>(dir: string, driver: D): ConfigOf<D> {
  const file = join(dir, CONFIG_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new FerryError('ERR_FERRY_INPUT', `cannot read ${file}: ${(err as Error).message}`);
  }
  const config = checkGuestConfig(raw, file);
  if (config.driver !== driver)
    throw new FerryError('ERR_FERRY_INPUT', `${file} is for a ${config.driver} guest; this is the ${driver} guest process`);
  return config as ConfigOf<D>;
}

/**
 * Runs this process as a guest process of driver `driver`: `argv` is GUESTDIR [--incoming]
 * (default: this process's). `start` builds the driver's half from the context, before the
 * control socket answers; a second process in the same directory is refused before it runs.
 * Any failure to start is one line in the log and exit status 1 (2: bad arguments).
 */
export function runGuestProcess<D extends GuestDriverName>(
  driver: D,
  start: (ctx: GuestProcessContext<ConfigOf<D>>) => GuestProcessDriver | Promise<GuestProcessDriver>,
  argv: string[] = process.argv.slice(2),
): void {
  const args = parseArgs(argv);
  if (!args) {
    process.stderr.write(`usage: ${basename(process.argv[1] ?? 'main.js')} GUESTDIR [--incoming]\n`);
    process.exit(2);
  }
  // The guest's log is where its operator reads that this process seals without the addon.
  onCryptoFallback(log);
  process.on('SIGHUP', () => {});
  // The agent may die, its IPC channel with it. This process carries on (a restarted agent re-attaches).
  process.on('disconnect', () => log('agent IPC channel closed'));
  let guest: GuestProcess<ConfigOf<D>> | null = null;
  process.on('message', (msg: unknown, handle: unknown) => {
    const m = msg as { type?: unknown; head?: unknown } | null;
    if (!m || m.type !== 'connection' || !handle) return;
    const socket = handle as Socket;
    const head = typeof m.head === 'string' ? Buffer.from(m.head, 'base64') : Buffer.alloc(0);
    if (guest) guest.onDataSocket(socket, head);
    else socket.destroy();
  });
  let built: GuestProcessDriver | null = null;
  const run = async (): Promise<void> => {
    const config = readConfig(args.dir, driver);
    // Before the driver opens the guest's files: another process may be running this guest.
    await claimControlPath(join(args.dir, CONTROL_SOCKET));
    guest = new GuestProcess(args.dir, config, args.incoming);
    built = await start(guest);
    await guest.start(built);
  };
  run().catch(async (err) => {
    log(`guest process failed to start: ${(err as Error).message}`);
    // The files in the directory may be another process's: only what this one started goes.
    await built?.close().catch(() => {});
    process.exit(1);
  });
}
