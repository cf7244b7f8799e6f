/**
 * A TCP port on 127.0.0.1 that nobody listens on right now, for the local clusters of `ferry demo`,
 * the benchmarks and the tests, whose ports are written into files before the agents bind them.
 *
 * Not the kernel's pick (`listen(0)`): that lies in the ephemeral range, where any outgoing
 * connection on the machine may take the port as its local port between this check and the
 * agent's bind — and a connection to a port in that range with no listener can even connect to
 * itself. So: a random port below the ephemeral range, checked by binding it.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';

const FALLBACK_FIRST_EPHEMERAL = 32_768;
const LOWEST = 20_000;

function firstEphemeralPort(): number {
  try {
    const first = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(first) && first > LOWEST + 1000 ? first : FALLBACK_FIRST_EPHEMERAL;
  } catch {
    return FALLBACK_FIRST_EPHEMERAL;
  }
}

function canListen(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/**
 * Ports this process handed out: one not yet bound (written into a cluster file, its agent still
 * starting) is free to bind, and a second draw of it would give two hosts one address.
 */
const handedOut = new Set<number>();

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const span = firstEphemeralPort() - LOWEST;
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = LOWEST + Math.floor(Math.random() * span);
    if (handedOut.has(port)) continue;
    if (await canListen(port, host)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port found below the ephemeral range (${LOWEST}-${LOWEST + span})`);
}
