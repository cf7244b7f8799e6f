/**
 * Digests of a QEMU guest's disks as the guest sees them (`--verify`): each disk read through a
 * read-only NBD export of the running, paused QEMU, so both ends hash the virtual content whatever
 * the image format and however the images lay out their clusters, and nothing is copied to disk.
 * The NBD client here speaks just what that needs of the protocol (fixed newstyle handshake,
 * NBD_OPT_EXPORT_NAME, simple replies to READ, one request at a time).
 */
import { createHash } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { FerryError } from '../../errors.js';
import type { QemuDisk } from '../types.js';
import { diskNode, mirroredDisks } from './disks.js';
import type { QmpClient } from './qmp.js';

export const DISK_DIGEST_ALGORITHM = 'sha256-virtual-disk-v1';
/** The message carrying the source's disk digests, before SOURCE_DONE (beside messages.ts's types). */
export const DISK_DIGESTS_MSG = 7;
const DIGEST_SOCKET = '.disk-digest.sock';
const READ_BYTES = 4 << 20;

const NBD = {
  MAGIC: Buffer.from('NBDMAGIC'),
  IHAVEOPT: Buffer.from('IHAVEOPT'),
  FLAG_FIXED_NEWSTYLE: 1,
  FLAG_NO_ZEROES: 2,
  OPT_EXPORT_NAME: 1,
  REQUEST_MAGIC: 0x25609513,
  SIMPLE_REPLY_MAGIC: 0x67446698,
  CMD_READ: 0,
  CMD_DISC: 2,
};

/** Bytes from a socket, taken in exact counts. */
class Reader {
  private chunks: Buffer[] = [];
  private have = 0;
  private waiter: (() => void) | null = null;
  private failure: Error | null = null;

  constructor(socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.have += c.length;
      this.waiter?.();
    });
    const end = (err?: Error) => {
      this.failure ??= err ?? new Error('the NBD server closed the connection');
      this.waiter?.();
    };
    socket.on('error', end);
    socket.on('close', () => end());
  }

  async take(n: number): Promise<Buffer> {
    while (this.have < n) {
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = null;
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.have -= n;
    return all.subarray(0, n);
  }
}

/** SHA-256 of export `name`'s whole content, `bytes` long, read from the NBD server at `socketPath`. */
export async function nbdDigest(socketPath: string, name: string, bytes: number): Promise<string> {
  const socket = createConnection(socketPath);
  const reader = new Reader(socket);
  try {
    const hello = await reader.take(18);
    if (!hello.subarray(0, 8).equals(NBD.MAGIC) || !hello.subarray(8, 16).equals(NBD.IHAVEOPT))
      throw new Error('not a newstyle NBD server');
    const serverFlags = hello.readUInt16BE(16);
    const noZeroes = (serverFlags & NBD.FLAG_NO_ZEROES) !== 0;
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(NBD.FLAG_FIXED_NEWSTYLE | (noZeroes ? NBD.FLAG_NO_ZEROES : 0));
    const opt = Buffer.alloc(16);
    NBD.IHAVEOPT.copy(opt, 0);
    opt.writeUInt32BE(NBD.OPT_EXPORT_NAME, 8);
    opt.writeUInt32BE(Buffer.byteLength(name), 12);
    socket.write(Buffer.concat([flags, opt, Buffer.from(name)]));
    const info = await reader.take(10 + (noZeroes ? 0 : 124));
    const size = Number(info.readBigUInt64BE(0));
    if (size !== bytes) throw new Error(`the export has ${size} bytes, the disk ${bytes}`);
    const hash = createHash('sha256');
    const request = Buffer.alloc(28);
    request.writeUInt32BE(NBD.REQUEST_MAGIC, 0);
    for (let at = 0, handle = 1n; at < size; at += READ_BYTES, handle++) {
      const length = Math.min(READ_BYTES, size - at);
      request.writeUInt16BE(0, 4);
      request.writeUInt16BE(NBD.CMD_READ, 6);
      request.writeBigUInt64BE(handle, 8);
      request.writeBigUInt64BE(BigInt(at), 16);
      request.writeUInt32BE(length, 24);
      socket.write(request);
      const reply = await reader.take(16);
      if (reply.readUInt32BE(0) !== NBD.SIMPLE_REPLY_MAGIC || reply.readBigUInt64BE(8) !== handle) throw new Error('a malformed NBD reply');
      const error = reply.readUInt32BE(4);
      if (error !== 0) throw new Error(`the NBD server could not read at ${at} (error ${error})`);
      hash.update(await reader.take(length));
    }
    request.writeUInt16BE(NBD.CMD_DISC, 6);
    request.writeBigUInt64BE(0n, 8);
    request.writeBigUInt64BE(0n, 16);
    request.writeUInt32BE(0, 24);
    socket.end(request);
    return hash.digest('hex');
  } catch (err) {
    throw new FerryError('ERR_FERRY_QEMU', `cannot read disk export ${name} for its digest: ${(err as Error).message}`);
  } finally {
    socket.destroy();
  }
}

/**
 * The digests of a paused guest's mirrored disks, in device order (null for a disk on shared
 * storage: both ends use the one file). QEMU has one NBD server: call this when no other runs.
 */
export async function diskDigests(qmp: QmpClient, dir: string, disks: readonly QemuDisk[]): Promise<(string | null)[]> {
  const out: (string | null)[] = disks.map(() => null);
  const mirrored = mirroredDisks(disks);
  if (mirrored.length === 0) return out;
  const socket = path.join(dir, DIGEST_SOCKET);
  await fs.rm(socket, { force: true });
  await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
  try {
    await fs.chmod(socket, 0o600);
    for (const { index, disk } of mirrored) {
      const name = `ferry-digest-disk${index}`;
      await qmp.execute('block-export-add', { type: 'nbd', id: name, 'node-name': diskNode(index), name, writable: false });
      out[index] = await nbdDigest(socket, name, disk.bytes);
    }
  } finally {
    await qmp.execute('nbd-server-stop').catch(() => {});
    await fs.rm(socket, { force: true });
  }
  return out;
}
