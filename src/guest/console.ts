/**
 * A guest's serial console as its guest process serves it (the guest protocol's `console`): the
 * log its hypervisor writes in the guest directory, read in bounded chunks at byte offsets, so a
 * reader can follow it as it grows without anyone holding all of it.
 */
import { promises as fs } from 'node:fs';
import { FerryError } from '../errors.js';

/** At most this many bytes a chunk: well inside the guest protocol's reply line, JSON escapes included. */
export const CONSOLE_CHUNK_BYTES = 64 * 1024;

export interface ConsoleChunk {
  /** The text from the offset asked for, whole UTF-8 characters only (a split one waits for the next chunk). */
  text: string;
  /** Where the next chunk starts: the offset asked for plus the bytes of `text`. */
  offset: number;
  /** The log's size now, in bytes (more to read while offset is below it). */
  size: number;
}

/**
 * How many of the bytes of `chunk` end on a character boundary: a UTF-8 sequence cut at the end
 * is left out (at most 3 bytes), so that decoding chunk by chunk never invents a replacement
 * character where the next chunk would have completed it.
 */
function wholeCharacters(chunk: Buffer): number {
  for (let back = 1; back <= Math.min(3, chunk.length); back++) {
    const byte = chunk[chunk.length - back]!;
    if ((byte & 0xc0) === 0x80) continue; // a continuation byte: look further back for its lead
    // 0xf8 and up begin nothing in UTF-8: a byte the decoder replaces, not one to wait on.
    const needs = byte >= 0xf8 ? 1 : byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return needs > back ? chunk.length - back : chunk.length;
  }
  return chunk.length;
}

/** The chunk of the console log `file` that starts at byte `offset`; an empty log when there is none yet. */
export async function readConsoleChunk(file: string, offset: number): Promise<ConsoleChunk> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (offset > 0) throw new FerryError('ERR_FERRY_INPUT', `offset ${offset} is past the end of the console log (none written yet)`);
    return { text: '', offset: 0, size: 0 };
  }
  try {
    const { size } = await handle.stat();
    if (offset > size) throw new FerryError('ERR_FERRY_INPUT', `offset ${offset} is past the end of the console log (${size} bytes)`);
    const buffer = Buffer.alloc(Math.min(CONSOLE_CHUNK_BYTES, size - offset));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
    const whole = wholeCharacters(buffer.subarray(0, bytesRead));
    return { text: buffer.toString('utf8', 0, whole), offset: offset + whole, size };
  } finally {
    await handle.close();
  }
}

/** The `console` handler of a guest without a serial console: says so (a synthetic guest is a process, not a machine). */
export function noSerialConsole(name: string, driver: string): never {
  throw new FerryError('ERR_FERRY_INPUT', `guest ${name} is a ${driver} guest, which has no serial console: only QEMU guests have one`);
}
