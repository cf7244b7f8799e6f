/**
 * The qemu driver's guest process: `node dist/guest/qemu/main.js GUESTDIR [--incoming]`.
 *
 * Spawned detached by its agent (src/guest/process.ts), with stdio to GUESTDIR/guest.log, so it
 * outlives the agent; it runs (or adopts) the guest's QEMU, which outlives this process in turn,
 * answers on GUESTDIR/control.sock, and takes data sockets over its IPC channel when incoming.
 */
import { readFileSync, rmSync, unlinkSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { join } from 'node:path';
import { onCryptoFallback } from '../../crypto/index.js';
import { FerryError } from '../../errors.js';
import { writeFileAtomicSync } from '../../common/atomic-file.js';
import { checkGuestConfig } from '../config.js';
import { listenControl } from '../control-server.js';
import { CONFIG_FILE, CONTROL_SOCKET, PID_FILE } from '../files.js';
import { QemuGuest } from './guest.js';

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} ${message}\n`);
}
// The guest's log is where its operator reads that this process seals without the addon.
onCryptoFallback(log);

/** An incoming guest nobody prepared (its agent died between spawn and prepare) has no future. */
const UNPREPARED_EXIT_MS = 60_000;

async function main(): Promise<void> {
  const dir = process.argv[2];
  const incomingMode = process.argv.includes('--incoming');
  if (!dir) {
    process.stderr.write('usage: main.js GUESTDIR [--incoming]\n');
    process.exit(2);
  }
  const config = checkGuestConfig(JSON.parse(readFileSync(join(dir, CONFIG_FILE), 'utf8')));
  if (config.driver !== 'qemu') throw new FerryError('ERR_FERRY_INPUT', `${dir} holds a ${config.driver} guest, not a QEMU one`);
  let server: Server | null = null;
  let exiting = false;
  const guest: QemuGuest = new QemuGuest(dir, config, incomingMode, {
    log,
    exit: (code, removeDir = false) => {
      if (exiting) return;
      exiting = true;
      void (async () => {
        await guest.close();
        server?.close();
        await guest.cleanup();
        for (const f of [CONTROL_SOCKET, PID_FILE]) {
          try {
            unlinkSync(join(dir, f));
          } catch {
            // already gone
          }
        }
        if (removeDir) rmSync(dir, { recursive: true, force: true });
        log(`guest process exits (${code})`);
        // Let the last reply reach the agent before the process goes.
        setTimeout(() => process.exit(code), 50);
      })();
    },
  });

  process.on('message', (msg: unknown, handle: unknown) => {
    const m = msg as { type?: unknown; head?: unknown } | null;
    if (!m || m.type !== 'connection' || !handle) return;
    const head = typeof m.head === 'string' ? Buffer.from(m.head, 'base64') : Buffer.alloc(0);
    guest.adoptSocket(handle as Socket, head);
  });
  // The agent may die; its IPC channel with it. This process carries on (a restarted agent re-attaches).
  process.on('disconnect', () => log('agent IPC channel closed'));
  process.on('SIGTERM', () => {
    if (guest.busy) log('SIGTERM ignored: a migration is in progress or unresolved');
    // The guest's QEMU outlives this process: SIGTERM ends only its ferry process.
    else guest.close().then(() => process.exit(0));
  });
  process.on('SIGHUP', () => {});
  if (incomingMode) {
    setTimeout(() => {
      if (guest.prepared) return;
      log(`no migration prepared within ${UNPREPARED_EXIT_MS} ms: exiting`);
      process.exit(1);
    }, UNPREPARED_EXIT_MS).unref();
  }

  await guest.start();
  server = await listenControl(join(dir, CONTROL_SOCKET), guest.handlers());
  writeFileAtomicSync(join(dir, PID_FILE), `${process.pid}\n`);
  log(`guest ${config.name} up: pid ${process.pid}, QEMU ${guest.status().hypervisorPid ?? 'not yet'}, ${config.memoryBytes} bytes memory, ${incomingMode ? 'incoming' : 'running'}`);
}

main().catch((err) => {
  log(`guest process failed to start: ${(err as Error).message}`);
  process.exit(1);
});
