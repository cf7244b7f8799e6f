/**
 * JSON-lines framing with a size limit: an incremental splitter that copes with any chunking and
 * refuses a line longer than its limit before buffering more of it.
 */
import { FerryError } from '../errors.js';

export class LineSplitter {
  private parts: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxLineBytes: number) {}

  /** The complete lines in `chunk` (without their newline). Throws ERR_FERRY_INPUT for an oversized line. */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl === -1) break;
      const piece = chunk.subarray(start, nl);
      this.check(this.buffered + piece.length);
      this.parts.push(piece);
      lines.push(Buffer.concat(this.parts).toString('utf8'));
      this.parts = [];
      this.buffered = 0;
      start = nl + 1;
    }
    const rest = chunk.subarray(start);
    if (rest.length > 0) {
      this.check(this.buffered + rest.length);
      // Copy: the caller may reuse `chunk`, and a small tail must not pin a large buffer.
      this.parts.push(Buffer.from(rest));
      this.buffered += rest.length;
    }
    return lines;
  }

  private check(length: number): void {
    if (length > this.maxLineBytes) {
      throw new FerryError('ERR_FERRY_INPUT', `message longer than the limit of ${this.maxLineBytes} bytes`);
    }
  }
}

export function encodeLine(message: unknown): string {
  return `${JSON.stringify(message)}\n`;
}
