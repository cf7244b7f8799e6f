/**
 * Every constant of the channel's wire format, in one place (docs/protocol.md explains each).
 *
 *   off size field
 *   0   1    version (1: key epoch 0; 2: a later key epoch)
 *   1   1    frame type (HELLO, DATA, ACK, END, ABORT, KEY_UPDATE)
 *   2   1    flags (ENCRYPTED; END_SEEN on ACK)
 *   3   1    message type (DATA: the engine's 0-255; others 0)
 *   4   4    connection id, big-endian; top bit = direction (0: source → destination)
 *   8   8    sequence number on this connection and direction, from 0, +1 a frame
 *   16  8    message number (DATA: its number; ACK: messages delivered; END: total; HELLO: resume point)
 *   24  4    payload length (plaintext bytes, tag not counted)
 *   28  1    extension length (HELLO: length of the migration id that follows; others 0)
 *   29  3    key epoch, big-endian: the key this frame is sealed under (0 in version 1 frames)
 *   32  ext  HELLO only: the migration id, ASCII
 *
 * The header and its extension are the AAD; the payload follows, then (encrypted mode) the 16-byte
 * GCM tag. IV = connection id (4 bytes) ‖ (sequence XOR the spec's 8-byte nonce).
 */
import { FerryError } from '../errors.js';
import { MIGRATION_ID, MIGRATION_ID_RULE } from '../common/names.js';
import { TAG_BYTES } from '../common/secrets.js';

/** Frames of key epoch 0: byte for byte what peers without key update send and expect. */
export const VERSION = 1;
/** Frames of key epoch 1 and later: a peer that only speaks version 1 refuses them by their version. */
export const VERSION_EPOCHS = 2;
export const HEADER_BYTES = 32;
export { IV_BYTES, TAG_BYTES } from '../common/secrets.js';

export const FrameType = { HELLO: 1, DATA: 2, ACK: 3, END: 4, ABORT: 5, KEY_UPDATE: 6 } as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];
export const FRAME_TYPE_NAMES: Record<number, string> = { 1: 'HELLO', 2: 'DATA', 3: 'ACK', 4: 'END', 5: 'ABORT', 6: 'KEY_UPDATE' };

export const Flag = {
  /** The payload is sealed and a tag follows. Must equal the spec's mode, or the frame is refused. */
  ENCRYPTED: 0x01,
  /** ACK only: the sender of the ACK has received the peer's END. */
  END_SEEN: 0x02,
} as const;
const KNOWN_FLAGS = Flag.ENCRYPTED | Flag.END_SEEN;

/** Top bit of the connection id: set on frames the destination (the accepting side) sends. */
export const DIRECTION_BIT = 0x8000_0000;
/** Source-chosen connection ids are 1..2^31-1; never reused within a migration. */
export const MAX_CONNECTION_ID = 0x7fff_ffff;

/**
 * Largest payload of one frame (and so one message). The receiver allocates at most this much (plus
 * header and tag) for a frame, and only after the header said so. Large enough that per-frame costs
 * vanish (hundreds of KiB is the sweet spot), small enough that one frame never holds up the others.
 */
export const MAX_PAYLOAD_BYTES = 4 * 1024 * 1024;
/** Largest ABORT reason, in bytes of UTF-8. */
export const MAX_ABORT_BYTES = 512;
/** HELLO payload: u32 receive window in bytes, u32 zero. */
export const HELLO_PAYLOAD_BYTES = 8;

/** Migration ids: what the agent routes on, in the clear. Same rule as ChannelSpec.migrationId. */
export { MIGRATION_ID, MIGRATION_ID_RULE };
export const MAX_MIGRATION_ID_BYTES = 64;

/** Largest HELLO on the wire: what the agent's router reads at most before routing. */
export const MAX_HELLO_BYTES = HEADER_BYTES + MAX_MIGRATION_ID_BYTES + HELLO_PAYLOAD_BYTES + TAG_BYTES;

/**
 * The budget of one key epoch, per direction: a sender moves to the next epoch's key before the
 * frame that would take it past either figure (docs/protocol.md, "Key epochs"). AES-GCM's
 * confidentiality bound (Bellare–Tackmann; draft-irtf-cfrg-aead-limits) is about (σ + q + 1)² / 2^129
 * for σ 16-byte blocks in q frames under one key: with σ ≤ 2^35 (these bytes) and q ≤ 2^32, an
 * attacker's advantage stays ≤ 2^-58.6 per epoch key, and ≤ 2^-56.4 for epoch 0, whose key (the
 * migration key itself) both directions share, HELLOs included. The IV is deterministic and unique per key
 * (connection id ‖ sequence XOR nonce), so no random-IV collision term enters, and a frame of at most
 * MAX_PAYLOAD_BYTES stays far inside GCM's 32-bit block counter (2^36 - 32 bytes a message).
 */
export const KEY_BUDGET_BYTES = 2 ** 39;
export const KEY_BUDGET_FRAMES = 2 ** 32;
/** The smallest budget a test may set: one largest frame must fit in an epoch. */
export const MIN_KEY_BUDGET_BYTES = MAX_PAYLOAD_BYTES;
/** The header holds 24 bits of epoch: 2^24 epochs of 2^39 bytes, 2^63 bytes a direction. */
export const MAX_KEY_EPOCH = 0xff_ffff;
/** The one fixed-size window a receiver may announce, so a peer can never make it buffer more. */
export const MAX_WINDOW_BYTES = 1024 * 1024 * 1024;
export const MIN_WINDOW_BYTES = 2 * MAX_PAYLOAD_BYTES;

export interface FrameHeader {
  version: number;
  type: FrameType;
  flags: number;
  messageType: number;
  connectionId: number;
  sequence: number;
  messageNumber: number;
  payloadLength: number;
  extensionLength: number;
  /** The key epoch the frame is sealed under (0 for HELLO and for every plain frame). */
  epoch: number;
}

function frameError(detail: string): FerryError {
  return new FerryError('ERR_FERRY_FRAME', `malformed frame: ${detail}`);
}

/** A u64 as a JS number; numbers past 2^53 are refused (no honest peer ever gets there). */
function readU64(buf: Uint8Array, off: number, field: string): number {
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const hi = view.readUInt32BE(off);
  if (hi >= 0x20_0000) throw frameError(`${field} is out of range`);
  return hi * 0x1_0000_0000 + view.readUInt32BE(off + 4);
}

function writeU64(buf: Buffer, off: number, value: number): void {
  buf.writeUInt32BE(Math.floor(value / 0x1_0000_0000), off);
  buf.writeUInt32BE(value >>> 0, off + 4);
}

/** Largest payload a frame of this type may carry. */
function maxPayload(type: number): number {
  switch (type) {
    case FrameType.DATA:
      return MAX_PAYLOAD_BYTES;
    case FrameType.HELLO:
      return HELLO_PAYLOAD_BYTES;
    case FrameType.ABORT:
      return MAX_ABORT_BYTES;
    default:
      return 0;
  }
}

/**
 * Parses and checks the fixed 32-byte header: everything that can be checked without the key.
 * Throws ERR_FERRY_FRAME; never allocates more than the header object.
 */
export function parseHeader(buf: Uint8Array): FrameHeader {
  if (buf.length < HEADER_BYTES) throw frameError(`header is ${buf.length} bytes, needs ${HEADER_BYTES}`);
  const view = Buffer.from(buf.buffer, buf.byteOffset, HEADER_BYTES);
  const version = view[0]!;
  if (version !== VERSION && version !== VERSION_EPOCHS)
    throw frameError(`version ${version}, this side speaks ${VERSION} and ${VERSION_EPOCHS}`);
  const type = view[1]!;
  if (!(type in FRAME_TYPE_NAMES)) throw frameError(`unknown frame type ${type}`);
  const flags = view[2]!;
  if ((flags & ~KNOWN_FLAGS) !== 0) throw frameError(`unknown flags 0x${flags.toString(16)}`);
  if ((flags & Flag.END_SEEN) !== 0 && type !== FrameType.ACK) throw frameError('END_SEEN on a frame that is not an ACK');
  const messageType = view[3]!;
  if (messageType !== 0 && type !== FrameType.DATA) throw frameError('message type set on a frame that is not DATA');
  const connectionId = view.readUInt32BE(4);
  if ((connectionId & MAX_CONNECTION_ID) === 0) throw frameError('connection id 0');
  const sequence = readU64(view, 8, 'sequence number');
  const messageNumber = readU64(view, 16, 'message number');
  const payloadLength = view.readUInt32BE(24);
  const limit = maxPayload(type);
  if (payloadLength > limit) throw frameError(`${FRAME_TYPE_NAMES[type]} payload of ${payloadLength} bytes exceeds ${limit}`);
  if (type === FrameType.HELLO && payloadLength !== HELLO_PAYLOAD_BYTES) throw frameError('HELLO payload has the wrong length');
  const extensionLength = view[28]!;
  if (type === FrameType.HELLO) {
    if (extensionLength < 1 || extensionLength > MAX_MIGRATION_ID_BYTES) throw frameError('HELLO migration id length out of range');
  } else if (extensionLength !== 0) {
    throw frameError('header extension on a frame that is not HELLO');
  }
  const epoch = view.readUIntBE(29, 3);
  // The version says whether an epoch follows, so an epoch-0 frame has exactly one encoding.
  if (version === VERSION && epoch !== 0) throw frameError('a version 1 frame names a key epoch');
  if (version === VERSION_EPOCHS && epoch === 0) throw frameError('a version 2 frame names key epoch 0');
  if (epoch !== 0 && (type === FrameType.HELLO || (flags & Flag.ENCRYPTED) === 0)) {
    throw frameError(`a ${(flags & Flag.ENCRYPTED) === 0 ? 'plain frame' : 'HELLO'} names a key epoch`);
  }
  if (type === FrameType.KEY_UPDATE && (epoch === 0 || messageNumber !== 0))
    throw frameError('KEY_UPDATE names no new epoch, or a message number');
  return {
    version,
    type: type as FrameType,
    flags,
    messageType,
    connectionId,
    sequence,
    messageNumber,
    payloadLength,
    extensionLength,
    epoch,
  };
}

/** Bytes of the whole frame on the wire, header included. */
export function frameBytes(h: FrameHeader): number {
  return HEADER_BYTES + h.extensionLength + h.payloadLength + ((h.flags & Flag.ENCRYPTED) !== 0 ? TAG_BYTES : 0);
}

/** The migration id a HELLO names in its header extension; ERR_FERRY_FRAME unless well-formed. */
export function helloMigrationId(aad: Uint8Array): string {
  const id = Buffer.from(aad.buffer, aad.byteOffset + HEADER_BYTES, aad.length - HEADER_BYTES).toString('latin1');
  if (!MIGRATION_ID.test(id)) throw frameError('HELLO names no valid migration id');
  return id;
}

export interface HeaderFields {
  type: FrameType;
  flags: number;
  messageType?: number;
  connectionId: number;
  sequence: number;
  messageNumber: number;
  payloadLength: number;
  migrationId?: string;
  /** Key epoch; default 0. */
  epoch?: number;
}

/** Bytes of header (and extension) for these fields. */
export function headerBytes(fields: { migrationId?: string }): number {
  return HEADER_BYTES + (fields.migrationId === undefined ? 0 : fields.migrationId.length);
}

/** Writes a header (and HELLO's extension) at the start of `buf`; returns its length. */
export function writeHeader(buf: Buffer, f: HeaderFields): number {
  const epoch = f.epoch ?? 0;
  buf[0] = epoch === 0 ? VERSION : VERSION_EPOCHS;
  buf[1] = f.type;
  buf[2] = f.flags;
  buf[3] = f.messageType ?? 0;
  buf.writeUInt32BE(f.connectionId >>> 0, 4);
  writeU64(buf, 8, f.sequence);
  writeU64(buf, 16, f.messageNumber);
  buf.writeUInt32BE(f.payloadLength, 24);
  const ext = f.migrationId === undefined ? 0 : f.migrationId.length;
  buf[28] = ext;
  buf.writeUIntBE(epoch, 29, 3);
  if (f.migrationId !== undefined) buf.write(f.migrationId, HEADER_BYTES, 'latin1');
  return HEADER_BYTES + ext;
}

/** Rewrites the connection id, sequence and key epoch of a header already written (for a retransmission). */
export function rewriteConnection(buf: Buffer, connectionId: number, sequence: number, epoch: number): void {
  buf[0] = epoch === 0 ? VERSION : VERSION_EPOCHS;
  buf.writeUInt32BE(connectionId >>> 0, 4);
  writeU64(buf, 8, sequence);
  buf.writeUIntBE(epoch, 29, 3);
}

/** IV = connection id ‖ (sequence XOR nonce), all big-endian. */
export function writeIv(iv: Buffer, nonce: Uint8Array, connectionId: number, sequence: number): Buffer {
  iv.writeUInt32BE(connectionId >>> 0, 0);
  const hi = Math.floor(sequence / 0x1_0000_0000);
  const lo = sequence >>> 0;
  const n = Buffer.from(nonce.buffer, nonce.byteOffset, 8);
  iv.writeUInt32BE((hi ^ n.readUInt32BE(0)) >>> 0, 4);
  iv.writeUInt32BE((lo ^ n.readUInt32BE(4)) >>> 0, 8);
  return iv;
}
