/**
 * HELLO, the first frame each way on every connection: key confirmation (it opens only under the
 * migration's key), the migration it names, the receive window its sender announces, and the
 * message its sender's receiving half resumes at after a reconnect (docs/protocol.md).
 */
import { FerryError, toFerryError } from '../errors.js';
import type { Connection } from './connection.js';
import type { RawFrame } from './decoder.js';
import type { FrameCrypto } from './frame-crypto.js';
import { FrameType, FRAME_TYPE_NAMES, HELLO_PAYLOAD_BYTES, MAX_WINDOW_BYTES, MIN_WINDOW_BYTES, helloMigrationId } from './wire.js';

/** A HELLO for `conn`: header and extension (the AAD) and sealed payload. */
export async function sealHello(
  crypto: FrameCrypto,
  conn: Connection,
  hello: { migrationId: string; windowBytes: number; resumeAt: number },
): Promise<Buffer> {
  const payload = Buffer.alloc(HELLO_PAYLOAD_BYTES);
  payload.writeUInt32BE(hello.windowBytes, 0);
  const f = crypto.frame(conn, FrameType.HELLO, {
    messageNumber: hello.resumeAt,
    payloadLength: payload.length,
    migrationId: hello.migrationId,
  });
  return crypto.sealOne(f, conn.sendId, payload);
}

/**
 * Checks a peer's HELLO, which must be the first frame of a connection. Returns the error that
 * refuses it, or the window the peer announces. Touches no channel state: the caller decides what
 * a refusal means. `numbered`: messages this side has numbered, beyond which no peer can resume.
 */
export async function checkHello(
  crypto: FrameCrypto,
  frame: RawFrame,
  expect: { migrationId: string; numbered: number },
): Promise<FerryError | number> {
  const h = frame.header;
  if (h.type !== FrameType.HELLO) return new FerryError('ERR_FERRY_FRAME', `first frame is ${FRAME_TYPE_NAMES[h.type]}, not HELLO`);
  const modeError = crypto.checkMode(h);
  if (modeError) return modeError;
  if (h.sequence !== 0) return new FerryError('ERR_FERRY_SEQUENCE', `HELLO has sequence ${h.sequence}, not 0`);
  let id: string;
  try {
    id = helloMigrationId(frame.aad);
  } catch (err) {
    return toFerryError(err, 'ERR_FERRY_FRAME');
  }
  if (id !== expect.migrationId) return new FerryError('ERR_FERRY_AUTH', 'HELLO names another migration');
  let payload: Buffer;
  try {
    payload = await crypto.openOne(frame);
  } catch (err) {
    return toFerryError(err, 'ERR_FERRY_AUTH');
  }
  const window = payload.readUInt32BE(0);
  if (window < MIN_WINDOW_BYTES || window > MAX_WINDOW_BYTES || payload.readUInt32BE(4) !== 0) {
    return new FerryError('ERR_FERRY_FRAME', 'HELLO announces an impossible window');
  }
  if (h.messageNumber > expect.numbered) {
    return new FerryError('ERR_FERRY_SEQUENCE', `HELLO resumes at message ${h.messageNumber}, beyond the ${expect.numbered} sent`);
  }
  return window;
}
