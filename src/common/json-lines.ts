/**
 * JSON lines with secret trailers: the framing of both control protocols (coordinator → agent in
 * src/agent/protocol.ts, agent → guest process in src/guest/protocol.ts) and of QMP.
 *
 * Each message is one JSON object on one line. Where the protocol allows secrets (a migration's
 * key and nonce), a line with `"secretBytes": n` is followed right after its newline by n raw
 * bytes. Secrets never travel inside JSON, where they would become immutable strings nobody can
 * wipe: the reader copies a trailer into a Buffer of its own, zeroes those bytes in its input, and
 * hands the Buffer on; the receiver wipes it when done. The writer (writeWithSecret) copies line
 * and trailer into one buffer and zeroes it once the socket has taken it.
 *
 * The reader copes with any chunking in linear time and refuses a line longer than its limit before
 * buffering more of it. A line that is not a JSON object is reported (the stream stays in step: it
 * announced no trailer); an oversized line or a bad `secretBytes` throws, since where the next
 * message starts is then unknown, and the reader stays failed.
 */
import type { Socket } from 'node:net';
import { FerryError } from '../errors.js';

export interface LineLimits {
  maxLineBytes: number;
  /** Largest trailer a line may announce; 0: no trailers, and `secretBytes` is an ordinary field. */
  maxSecretBytes: number;
}

export type Received =
  | {
      message: Record<string, unknown>;
      /** The raw bytes after the line, when it announced `secretBytes`; the receiver must wipe them. */
      secret: Buffer | null;
      error?: undefined;
    }
  /** A line that is not a JSON object: what is wrong with it (never its text). */
  | { message?: undefined; secret?: undefined; error: FerryError };

export class LineReader {
  /** The pieces of the unfinished line (copies: the caller may reuse its chunks). */
  private parts: Buffer[] = [];
  private buffered = 0;
  /** The trailer being read: its line, its buffer, and how much of it has arrived. */
  private trailer: { message: Record<string, unknown>; secret: Buffer; filled: number } | null = null;
  private failure: FerryError | null = null;

  constructor(private readonly limits: LineLimits) {}

  /** Feeds bytes; returns the messages they complete. Throws ERR_FERRY_INPUT when the stream cannot go on. */
  feed(chunk: Buffer): Received[] {
    if (this.failure) throw this.failure;
    const out: Received[] = [];
    try {
      let at = 0;
      while (at < chunk.length) {
        if (this.trailer) {
          at = this.takeTrailer(chunk, at, out);
          continue;
        }
        const nl = chunk.indexOf(0x0a, at);
        if (nl === -1) {
          this.check(this.buffered + chunk.length - at);
          this.parts.push(Buffer.from(chunk.subarray(at)));
          this.buffered += chunk.length - at;
          break;
        }
        const piece = chunk.subarray(at, nl);
        this.check(this.buffered + piece.length);
        const line = this.parts.length === 0 ? piece : Buffer.concat([...this.parts, piece]);
        this.parts = [];
        this.buffered = 0;
        at = nl + 1;
        this.onLine(line, out);
      }
    } catch (err) {
      this.failure = err as FerryError;
      chunk.fill(0);
      this.wipe();
      throw err;
    }
    return out;
  }

  /** Copies trailer bytes out of `chunk` (zeroing them there); returns where the rest starts. */
  private takeTrailer(chunk: Buffer, at: number, out: Received[]): number {
    const t = this.trailer!;
    const end = Math.min(chunk.length, at + t.secret.length - t.filled);
    t.filled += chunk.copy(t.secret, t.filled, at, end);
    chunk.fill(0, at, end);
    if (t.filled === t.secret.length) {
      out.push({ message: t.message, secret: t.secret });
      this.trailer = null;
    }
    return end;
  }

  private onLine(line: Buffer, out: Received[]): void {
    const text = line.toString('utf8');
    if (text.trim() === '') return;
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      out.push({ error: new FerryError('ERR_FERRY_INPUT', 'message is not JSON') });
      return;
    }
    if (message === null || typeof message !== 'object' || Array.isArray(message)) {
      out.push({ error: new FerryError('ERR_FERRY_INPUT', 'message is not a JSON object') });
      return;
    }
    const record = message as Record<string, unknown>;
    const bytes = record.secretBytes;
    if (this.limits.maxSecretBytes === 0 || bytes === undefined) {
      out.push({ message: record, secret: null });
      return;
    }
    if (typeof bytes !== 'number' || !Number.isInteger(bytes) || bytes < 1 || bytes > this.limits.maxSecretBytes) {
      throw new FerryError('ERR_FERRY_INPUT', `secretBytes must be a whole number from 1 to ${this.limits.maxSecretBytes}`);
    }
    this.trailer = { message: record, secret: Buffer.alloc(bytes), filled: 0 };
  }

  private check(length: number): void {
    if (length > this.limits.maxLineBytes) {
      throw new FerryError('ERR_FERRY_INPUT', `message longer than the limit of ${this.limits.maxLineBytes} bytes`);
    }
  }

  /** Wipes whatever is buffered, a partial trailer included (a connection that closed mid-secret). */
  wipe(): void {
    for (const p of this.parts) p.fill(0);
    this.parts = [];
    this.buffered = 0;
    this.trailer?.secret.fill(0);
    this.trailer = null;
  }
}

/** One JSON object on one line, newline-terminated. */
export function encodeLine(message: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(message)}\n`);
}

/**
 * Writes `message` with `secret` as its trailer (`secretBytes` is added to the message). Line and
 * trailer go out in one write of a buffer of their own, zeroed once the socket has taken it; the
 * caller keeps and wipes `secret` itself.
 */
export function writeWithSecret(socket: Pick<Socket, 'write'>, message: Record<string, unknown>, secret: Uint8Array): void {
  const line = encodeLine({ ...message, secretBytes: secret.length });
  const out = Buffer.alloc(line.length + secret.length);
  line.copy(out);
  out.set(secret, line.length);
  socket.write(out, () => out.fill(0));
}
