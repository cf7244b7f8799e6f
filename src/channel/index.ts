/**
 * The encrypted migration channel (docs/protocol.md).
 *
 *   source:       const ch = await connectChannel(spec)            // spec.networks: the destination's
 *   destination:  const { channel } = await listenChannel(spec)     // or createIncomingChannel + adopt
 *   agent:        await listenRouter(addresses, (id, socket, head) => ...)
 */
export type { Channel, ChannelMessage, ChannelMode, ChannelSpec, ChannelStats, PlacePayload, Placement } from './types.js';
export { DEFAULT_WINDOW_BYTES, type ChannelOptions } from './options.js';
export { connectChannel } from './source.js';
export { createIncomingChannel, listenChannel, type ChannelListener, type IncomingChannel } from './destination.js';
export { listenRouter, readHelloHeader, type MigrationRouter, type RouteConnection, type RouterOptions } from './router.js';
export { parseNetwork, formatNetwork, type NetworkAddress } from './network.js';
export { MAX_PAYLOAD_BYTES, MAX_HELLO_BYTES, KEY_BUDGET_BYTES, KEY_BUDGET_FRAMES, HEADER_BYTES, TAG_BYTES } from './wire.js';
