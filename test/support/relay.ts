/**
 * A TCP relay on 127.0.0.1 that a test puts between a migration's source and destination, to cut
 * every connection it carries (as a failing network does), while `partitioned` to refuse new ones
 * (so the channel cannot simply reconnect until the partition heals), and while `muteReplies` to
 * drop what the destination sends back (a one-way failure: its answers are lost on the way).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { parseDocument } from 'yaml';
import { loadCluster } from '../../src/coordinator/cluster.js';

export class CuttableRelay {
  private readonly carried = new Set<Socket>();
  private server: Server | null = null;
  /** While true, new connections are closed at once. */
  partitioned = false;
  /** While true, bytes from the target back to the connecting side are dropped. */
  muteReplies = false;
  cuts = 0;
  /** Connections it took (refused ones included). */
  accepted = 0;

  /** `target` may change later (e.g. once a destination's address is known). */
  constructor(public target: { host: string; port: number }) {}

  async listen(): Promise<string> {
    this.server = createServer((inbound) => {
      this.accepted++;
      if (this.partitioned) {
        inbound.destroy();
        return;
      }
      const outbound = createConnection(this.target);
      for (const s of [inbound, outbound]) {
        this.carried.add(s);
        s.on('error', () => {});
        s.on('close', () => {
          this.carried.delete(s);
          (s === inbound ? outbound : inbound).destroy();
        });
      }
      inbound.pipe(outbound);
      outbound.on('data', (bytes: Buffer) => {
        if (!this.muteReplies) inbound.write(bytes);
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Destroys every connection the relay carries. */
  cut(): void {
    this.cuts++;
    for (const s of this.carried) s.destroy();
  }

  close(): void {
    this.cut();
    this.server?.close();
  }
}

/**
 * Host `name`'s first migration network behind a relay: the cluster file advertises the relay for
 * it, and the second network as it is. `restore()` puts the file back and closes the relay.
 */
export async function relayFirstNetwork(
  clusterFile: string,
  name: string,
): Promise<{ relay: CuttableRelay; first: string; second: string; restore: () => void }> {
  const [first, second] = (await loadCluster(clusterFile)).hosts.get(name)!.networks;
  const [host, port] = first!.listen.split(':');
  const relay = new CuttableRelay({ host: host!, port: Number(port) });
  const original = readFileSync(clusterFile, 'utf8');
  const restore = () => {
    relay.close();
    writeFileSync(clusterFile, original);
  };
  try {
    const doc = parseDocument(original);
    doc.setIn(['hosts', name, 'networks'], [{ listen: first!.listen, advertise: await relay.listen() }, { listen: second!.listen }]);
    writeFileSync(clusterFile, doc.toString());
  } catch (err) {
    restore();
    throw err;
  }
  return { relay, first: first!.listen, second: second!.listen, restore };
}
