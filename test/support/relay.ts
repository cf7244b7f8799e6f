/**
 * A TCP relay on 127.0.0.1 that a test puts between a migration's source and destination, to cut
 * every connection it carries (as a failing network does), while `partitioned` to refuse new ones
 * (so the channel cannot simply reconnect until the partition heals), and while `muteReplies` to
 * drop what the destination sends back (a one-way failure: its answers are lost on the way).
 */
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

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
