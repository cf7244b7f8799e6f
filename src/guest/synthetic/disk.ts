/**
 * The guest's disk: a sparse image file of BLOCK_SIZE blocks. The workload worker and the guest
 * process each open it (one page cache, so each sees the other's writes at once); the migration
 * engine reads and writes whole blocks with positioned I/O.
 */
import { closeSync, existsSync, fstatSync, ftruncateSync, openSync, readSync, writeSync, fsyncSync } from 'node:fs';
import { FerryError } from '../../errors.js';
import { BLOCK_SIZE, blockCountOf } from './layout.js';

export class DiskImage {
  readonly path: string;
  readonly bytes: number;
  readonly blockCount: number;
  private fd: number;

  private constructor(path: string, bytes: number, fd: number) {
    this.path = path;
    this.bytes = bytes;
    this.blockCount = blockCountOf(bytes);
    this.fd = fd;
  }

  /**
   * Opens the image at `path`, creating it sparse when missing. `fresh`: empty it first (an
   * incoming guest must not keep blocks of an earlier guest that the source never sends).
   */
  static open(path: string, bytes: number, options: { fresh?: boolean } = {}): DiskImage {
    const existed = existsSync(path);
    const fd = openSync(path, existed ? 'r+' : 'w+', 0o600);
    try {
      if (options.fresh) ftruncateSync(fd, 0);
      const size = fstatSync(fd).size;
      if (size !== bytes) {
        if (existed && !options.fresh && size > bytes) {
          throw new FerryError('ERR_FERRY_INPUT', `disk image ${path} is ${size} bytes, larger than the configured ${bytes}`);
        }
        ftruncateSync(fd, bytes);
      }
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    return new DiskImage(path, bytes, fd);
  }

  /** Reads `count` blocks from `first` into `into` (which must hold them); returns the bytes read. */
  readBlocks(first: number, count: number, into: Uint8Array): Uint8Array {
    const length = this.runBytes(first, count);
    const out = into.subarray(0, length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, out, done, length - done, first * BLOCK_SIZE + done);
      if (n === 0) {
        out.fill(0, done);
        break;
      }
      done += n;
    }
    return out;
  }

  writeBlocks(first: number, count: number, data: Uint8Array): void {
    const length = this.runBytes(first, count);
    if (data.length !== length)
      throw new FerryError('ERR_FERRY_INTERNAL', `block run ${first}+${count} needs ${length} bytes, got ${data.length}`);
    this.writeAt(first * BLOCK_SIZE, data);
  }

  writeAt(offset: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) done += writeSync(this.fd, data, done, data.length - done, offset + done);
  }

  /** Bytes of the run `first`+`count`; the last block may be short. */
  runBytes(first: number, count: number): number {
    if (count < 1 || first < 0 || first + count > this.blockCount) {
      throw new FerryError('ERR_FERRY_INTERNAL', `block run ${first}+${count} is outside ${this.blockCount} blocks`);
    }
    return Math.min((first + count) * BLOCK_SIZE, this.bytes) - first * BLOCK_SIZE;
  }

  sync(): void {
    fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
