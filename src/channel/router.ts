/**
 * The destination agent's side of the data plane: it owns the host's migration addresses, reads
 * the plaintext header of each new connection's HELLO — at most MAX_HELLO_BYTES, within a time
 * limit — and hands the socket, with the bytes it read, to whoever receives that migration (the
 * incoming guest process, over IPC). It never holds a key: the receiver checks the HELLO.
 */
import type { Server, Socket } from 'node:net';
import { FerryError } from '../errors.js';
import { parseNetwork } from './network.js';
import { boundAddress, closeAll, listenAll } from './destination.js';
import { FrameType, HEADER_BYTES, MAX_HELLO_BYTES, helloMigrationId, parseHeader } from './wire.js';

export interface RouterOptions {
  /** The HELLO header must arrive within this. Default 5 s. */
  headerTimeoutMs?: number;
  /** Told about each connection dropped before routing (malformed, slow, or an unknown migration). */
  onRejected?: (error: FerryError, socket: Socket) => void;
}

/**
 * Called with each new connection's migration id, the socket (paused, no listeners of the router's
 * left) and every byte read from it. Return false for an unknown migration: the router destroys
 * the socket. Returning true hands the socket over (e.g. `child.send(msg, socket)`).
 */
export type RouteConnection = (migrationId: string, socket: Socket, head: Buffer) => boolean;

export interface MigrationRouter {
  /** Bound addresses, 'host:port', in the order given. */
  readonly networks: string[];
  close(): Promise<void>;
}

/**
 * Stops a socket's reads at the handle, not only its stream. `pause()` alone leaves a plain
 * socket's handle reading into the stream's buffer; once the socket goes to another process
 * (`child.send(msg, socket)`, which may wait in Node's queue for the previous hand-over to be
 * acknowledged) whatever this process read meanwhile is lost with it, and both processes read the
 * same kernel socket until the hand-over completes. Reading resumes with the stream (`resume()`
 * restarts a handle whose `reading` is false), so a socket kept in this process is unaffected.
 */
function stopReading(socket: Socket): void {
  const handle = (socket as unknown as { _handle?: { reading?: boolean; readStop?: () => number } | null })._handle;
  if (handle && typeof handle.readStop === 'function') {
    handle.reading = false;
    handle.readStop();
  }
}

/** Reads the HELLO header of one connection; resolves with the id and the bytes read. */
export function readHelloHeader(socket: Socket, timeoutMs: number): Promise<{ migrationId: string; head: Buffer }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const done = (err: FerryError | null): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('end', onEnd);
      socket.pause();
      // Anything the stream buffered belongs to the receiver too. Drained first: a read() of an
      // emptied stream starts the handle reading again.
      for (let c = socket.read() as Buffer | null; c !== null; c = socket.read() as Buffer | null) chunks.push(c);
      stopReading(socket);
      if (err) {
        reject(err);
        return;
      }
      const head = Buffer.concat(chunks);
      try {
        resolve({ migrationId: helloMigrationId(head.subarray(0, HEADER_BYTES + head[28]!)), head });
      } catch (e) {
        reject(e);
      }
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      length += chunk.length;
      if (length < HEADER_BYTES) return;
      const first = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      try {
        const h = parseHeader(first);
        if (h.type !== FrameType.HELLO) throw new FerryError('ERR_FERRY_FRAME', 'first frame is not a HELLO');
        if (length < HEADER_BYTES + h.extensionLength) return;
        if (length > MAX_HELLO_BYTES * 2) throw new FerryError('ERR_FERRY_FRAME', 'more than a HELLO before the HELLO exchange');
        done(null);
      } catch (err) {
        done(err instanceof FerryError ? err : new FerryError('ERR_FERRY_FRAME', String(err)));
      }
    };
    const onError = (err: Error): void => done(new FerryError('ERR_FERRY_NETWORK', `connection failed before its HELLO: ${err.message}`));
    const onEnd = (): void => done(new FerryError('ERR_FERRY_FRAME', 'connection ended before its HELLO'));
    const timer = setTimeout(() => done(new FerryError('ERR_FERRY_TIMEOUT', `no HELLO header within ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('end', onEnd);
  });
}

/** Listens on the host's migration addresses and routes each connection by its HELLO's migration id. */
export async function listenRouter(
  networks: readonly string[],
  route: RouteConnection,
  options: RouterOptions = {},
): Promise<MigrationRouter> {
  const addresses = networks.map((n) => parseNetwork(n, { listen: true }));
  if (addresses.length === 0) throw new FerryError('ERR_FERRY_INPUT', 'router: at least one migration address is needed');
  const timeoutMs = options.headerTimeoutMs ?? 5_000;
  const open = new Set<Socket>();
  const drop = (socket: Socket, err: FerryError): void => {
    socket.destroy();
    options.onRejected?.(err, socket);
  };
  const servers: Server[] = await listenAll(addresses, (socket) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
    readHelloHeader(socket, timeoutMs).then(
      ({ migrationId, head }) => {
        open.delete(socket);
        let taken: boolean;
        try {
          taken = route(migrationId, socket, head);
        } catch {
          taken = false;
        }
        if (!taken) drop(socket, new FerryError('ERR_FERRY_NOT_FOUND', `no incoming migration "${migrationId}" here`));
      },
      (err: FerryError) => drop(socket, err),
    );
  });
  return {
    networks: servers.map((s) => boundAddress(s)),
    close: async () => {
      await closeAll(servers);
      for (const s of open) s.destroy();
    },
  };
}
