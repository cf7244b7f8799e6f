/**
 * The coordinator decides each migration's encryption, from the guest's setting (or the operator's
 * --mode) and both hosts' capabilities as read over the authenticated control channel. The result
 * goes into the spec both agents receive, so nothing on the data plane can downgrade it.
 */
import { FerryError } from '../errors.js';
import type { ChannelMode } from '../channel/types.js';
import type { EncryptedMigration } from '../guest/types.js';
import { ENCRYPTED_MIGRATION_MODES } from '../guest/config.js';

export interface ModeDecision {
  mode: ChannelMode;
  /** Set when opportunistic fell back to plain: shown to the operator. */
  warning?: string;
}

export interface EncryptionCapable {
  name: string;
  encrypts: boolean;
}

export function decideMode(setting: EncryptedMigration, source: EncryptionCapable, destination: EncryptionCapable): ModeDecision {
  const unable = [source, destination].filter((h) => !h.encrypts).map((h) => h.name);
  switch (setting) {
    case 'disabled':
      return { mode: 'plain' };
    case 'opportunistic':
      if (unable.length === 0) return { mode: 'encrypted' };
      return {
        mode: 'plain',
        warning: `migrating in plain text: ${unable.join(' and ')} cannot encrypt (encrypted-migration is opportunistic)`,
      };
    case 'required':
      if (unable.length === 0) return { mode: 'encrypted' };
      throw new FerryError('ERR_FERRY_REFUSED', `encrypted migration is required, but ${unable.join(' and ')} cannot encrypt`);
    default:
      throw new FerryError(
        'ERR_FERRY_INPUT',
        `unknown encrypted-migration mode "${String(setting)}": use ${ENCRYPTED_MIGRATION_MODES.join(', ')}`,
      );
  }
}

/** How strict each setting is: a move may run under a stricter one than its guest's, never a weaker. */
const STRICTNESS: Record<EncryptedMigration, number> = { disabled: 0, opportunistic: 1, required: 2 };

/**
 * The setting a move of `guest` runs under: the operator's `--mode` when it is at least as strict
 * as the guest's own setting, else a usage error that says how to change the guest instead (a
 * flag never weakens what the guest's owner asked for).
 */
export function moveSetting(guest: string, setting: EncryptedMigration, requested: EncryptedMigration | undefined): EncryptedMigration {
  if (requested === undefined) return setting;
  if (STRICTNESS[requested] < STRICTNESS[setting]) {
    throw new FerryError(
      'ERR_FERRY_USAGE',
      `--mode ${requested} would weaken guest ${guest}'s encrypted-migration ${setting}; to move it so, change the guest first: ferry vm set ${guest} --encrypted-migration ${requested}`,
    );
  }
  return requested;
}

export function parseEncryptedMigration(text: string, option = '--mode'): EncryptedMigration {
  if ((ENCRYPTED_MIGRATION_MODES as readonly string[]).includes(text)) return text as EncryptedMigration;
  throw new FerryError('ERR_FERRY_INPUT', `${option}: "${text}" is not one of ${ENCRYPTED_MIGRATION_MODES.join(', ')}`);
}
