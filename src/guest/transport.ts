/**
 * Where a guest process gets its migration channel: the encrypted channel of src/channel. The
 * source dials the destination's migration networks; the destination adopts the sockets its agent
 * hands over (with the bytes the agent's router already read).
 */
import type { Socket } from 'node:net';
import { connectChannel, createIncomingChannel, type ChannelOptions } from '../channel/index.js';
import type { Channel } from '../channel/types.js';
import type { ChannelParams } from '../migration/types.js';
import { pageCopier } from '../crypto/index.js';

export interface IncomingTransport {
  channel: Channel;
  adopt(socket: Socket, head?: Uint8Array): void;
}

/**
 * `signal`: the operator's cancel, which ends the connecting at once (ERR_FERRY_ABORTED);
 * `onFailover`: told each move to another of the networks. A plain channel copies pages into its
 * frames with the addon's copyBatch when it is built.
 */
export async function openOutgoing(
  params: ChannelParams,
  networks: string[],
  options: Pick<ChannelOptions, 'signal' | 'onFailover'> = {},
): Promise<Channel> {
  return connectChannel({ ...params, networks }, { ...options, copy: pageCopier() });
}

export async function openIncoming(params: ChannelParams, options: ChannelOptions = {}): Promise<IncomingTransport> {
  const channel = await createIncomingChannel(params, options);
  return { channel, adopt: (socket, head) => channel.adopt(socket, head) };
}
