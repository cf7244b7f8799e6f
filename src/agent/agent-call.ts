/** One control call from this agent to another, with this host's own certificate, on a connection of its own. */
import { AgentClient } from '../control/client.js';
import { FERRY_VERSION } from '../common/version.js';
import type { MigrationHost } from './migration-records.js';

export async function askAgent<T>(
  host: Pick<MigrationHost, 'state'>,
  place: { host: string; control: string },
  call: (client: AgentClient) => Promise<T>,
): Promise<T> {
  const client = await AgentClient.connect({
    address: place.control,
    host: place.host,
    credentials: await host.state.credentials(),
    client: `ferry-agent ${FERRY_VERSION} (${host.state.config.name})`,
  });
  try {
    return await call(client);
  } finally {
    client.close();
  }
}
