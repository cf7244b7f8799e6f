/**
 * Where a guest process gets its migration channel: the encrypted channel of src/channel, which
 * this branch does not have yet. Until it is merged, migrations fail with this coded error.
 */
import type { Socket } from 'node:net';
import type { Channel } from '../../channel/types.js';
import { FerryError } from '../../errors.js';
import type { ChannelParams } from '../../migration/types.js';

export interface IncomingTransport {
  channel: Channel;
  adopt(socket: Socket, head?: Uint8Array): void;
}

function missing(): FerryError {
  return new FerryError('ERR_FERRY_INTERNAL', 'this build has no migration channel (src/channel is not merged yet)');
}

export async function openOutgoing(_params: ChannelParams, _networks: string[]): Promise<Channel> {
  throw missing();
}

export async function openIncoming(_params: ChannelParams): Promise<IncomingTransport> {
  throw missing();
}
