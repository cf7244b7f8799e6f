/**
 * The last words on a channel once a migration's outcome is settled. The outcome never waits for
 * them: the message is queued (awaited, briefly), and the END handshake finishes in the
 * background, the channel failed if it does not finish in time.
 */
import type { Channel } from '../channel/types.js';
import { FerryError } from '../errors.js';
import { withTimeout } from '../common/async.js';
import { encodeJson } from './messages.js';

const SEND_MS = 5000;
const END_MS = 5000;

export async function farewell(channel: Channel, last?: { type: number; body: object }): Promise<void> {
  if (channel.error) return;
  try {
    if (last) await withTimeout(channel.send(last.type, encodeJson(last.body)), SEND_MS, () => new Error('timeout'));
  } catch {
    // The peer is gone; what it would have heard, it learns from the agents.
  }
  void withTimeout(channel.end(), END_MS, () => new Error('timeout')).catch(() => {
    if (!channel.error) channel.abort(new FerryError('ERR_FERRY_TIMEOUT', 'the peer did not finish the channel'));
  });
}
