/**
 * From a guest's encrypted-migration setting and the two hosts' capabilities (read over the
 * authenticated control API) to the one mode both channel ends get in their spec. Deciding here,
 * at the coordinator, is what makes a downgrade on the wire impossible: neither end accepts a frame
 * whose mode flag differs from its spec.
 */
import { FerryError } from '../errors.js';
import type { EncryptedMigration } from '../guest/types.js';
import type { ChannelMode } from './types.js';

export interface ModeDecision {
  mode: ChannelMode;
  /** Set when an opportunistic migration goes plain: the CLI prints it. */
  warning?: string;
}

export function resolveChannelMode(setting: EncryptedMigration, sourceCanEncrypt: boolean, destinationCanEncrypt: boolean): ModeDecision {
  const both = sourceCanEncrypt && destinationCanEncrypt;
  const who = !sourceCanEncrypt && !destinationCanEncrypt ? 'neither host' : !sourceCanEncrypt ? 'the source host' : 'the destination host';
  switch (setting) {
    case 'disabled':
      return { mode: 'plain' };
    case 'opportunistic':
      return both ? { mode: 'encrypted' } : { mode: 'plain', warning: `migrating in the clear: ${who} cannot encrypt (encrypted-migration is opportunistic)` };
    case 'required':
      if (!both) throw new FerryError('ERR_FERRY_REFUSED', `encrypted migration is required but ${who} cannot encrypt`);
      return { mode: 'encrypted' };
    default:
      throw new FerryError('ERR_FERRY_INPUT', `encrypted-migration must be disabled, opportunistic or required; got "${String(setting)}"`);
  }
}
