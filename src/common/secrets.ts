/**
 * The sizes of a migration's secrets and of what AES-256-GCM puts around them, one definition
 * each. The coordinator makes KEY_BYTES + NONCE_BYTES of CSPRNG output per migration; the control
 * API carries exactly that as a request's secret trailer; the channel derives each frame's IV from
 * the nonce (docs/protocol.md).
 */

/** AES-256: a migration's key. */
export const KEY_BYTES = 32;
/** The migration's nonce, XORed into every frame's sequence number to make its IV. */
export const NONCE_BYTES = 8;
/** Key and nonce together, as one secret trailer of the control protocols. */
export const SECRET_BYTES = KEY_BYTES + NONCE_BYTES;
/** GCM's IV: connection id (32 bits) and sequence number XOR nonce (64 bits). */
export const IV_BYTES = 12;
/** GCM's authentication tag. */
export const TAG_BYTES = 16;
