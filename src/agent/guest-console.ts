/**
 * `guest.console`: a guest's serial console log, read chunk by chunk from its guest process (the
 * guest protocol's `console`) and streamed to the client as events; following, the log is looked
 * at again every CONSOLE_POLL_MS for what the guest wrote since. Each event waits until the client
 * has taken the one before, so a guest that floods its console costs the agent one chunk of memory,
 * not the whole log.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { FerryError } from '../errors.js';
import type { ConsoleEvent, ConsoleParams, ConsoleResult } from '../control/protocol.js';
import type { GuestClient } from '../guest/index.js';
import type { GuestManager } from './guests.js';

/** How often a followed console is read again once it has been read to its end. */
const CONSOLE_POLL_MS = 250;

/** How long a guest process that refused a console read may take to exit, for the refusal to count as its exit. */
const EXIT_GRACE_MS = 1000;

async function lostWithin(client: GuestClient, ms: number): Promise<boolean> {
  const timer = delay(ms, false);
  return Promise.race([client.closed.then(() => true), timer]);
}

export interface ConsoleStream {
  /** Aborted when the client goes away (the end of a follow) or the agent stops. */
  signal: AbortSignal;
  emit(event: ConsoleEvent): void;
  drained(): Promise<void>;
}

export async function streamConsole(
  guests: GuestManager,
  host: string,
  params: ConsoleParams,
  stream: ConsoleStream,
): Promise<ConsoleResult> {
  const { name, follow = false } = params;
  await guests.recordOf(name);
  let offset = params.offset ?? 0;
  const result = (reason: ConsoleResult['reason']): ConsoleResult => ({ name, host, offset, reason });
  let client: GuestClient | null = await guests.client(name);
  if (!client)
    throw new FerryError('ERR_FERRY_REFUSED', `guest "${name}" is not running on host ${host}: its console is served by its guest process`);
  /** Not following: the log's size at the first read, where the reading stops however fast the guest writes. */
  let end: number | null = null;
  while (!stream.signal.aborted) {
    let chunk;
    try {
      chunk = await client.console(offset);
    } catch (err) {
      // A refusal (no serial console, an offset past the end) is the answer; a lost process is not,
      // nor one from a process on its way out (destroyed: its log removed before it exits).
      if (!client.lost && !(await lostWithin(client, EXIT_GRACE_MS))) throw err;
      // The guest process went: stopped, destroyed, migrated away, or replaced (a QEMU outlives its process).
      client = await guests.recordOf(name).then(
        () => guests.client(name),
        () => null,
      );
      if (!client) return result('stopped');
      continue;
    }
    end ??= chunk.size;
    if (chunk.text) {
      stream.emit({ type: 'console', text: chunk.text, offset: chunk.offset });
      await stream.drained();
    }
    // No progress at all is caught up too: the last bytes are a character the guest is still writing.
    const caughtUp = chunk.offset >= chunk.size || chunk.offset === offset;
    offset = chunk.offset;
    if (!follow && (caughtUp || offset >= end)) return result('end');
    if (caughtUp) await delay(CONSOLE_POLL_MS, undefined, { signal: stream.signal }).catch(() => {});
  }
  return result('end');
}
