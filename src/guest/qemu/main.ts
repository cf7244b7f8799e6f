/**
 * The qemu driver's guest process: `node dist/guest/qemu/main.js GUESTDIR [--incoming]`, a guest
 * process (src/guest/guest-process.ts) that runs (or adopts) the guest's QEMU, which outlives this
 * process in turn: SIGTERM ends the process only; stop, destroy and finish end the QEMU too.
 */
import { runGuestProcess } from '../guest-process.js';
import { QemuGuest } from './guest.js';
import { qemuRuns } from './hypervisor.js';

runGuestProcess('qemu', async (ctx) => {
  const guest = new QemuGuest(ctx.dir, ctx.config, ctx.incoming, {
    log: (message) => ctx.log(message),
    exit: (code, removeDir = false) => void ctx.exit(code, { removeDir }),
    adoptDataSockets: (adopt) => ctx.adoptDataSockets(adopt),
  });
  await guest.start();
  return {
    // Its hello, stop and destroy are the scaffold's, which calls stop() below.
    handlers: guest.handlers(),
    summary: `QEMU ${guest.status().hypervisorPid ?? 'not yet'}, ${ctx.config.memoryBytes} bytes memory`,
    busy: () => (guest.busy ? 'a migration is in progress or unresolved' : null),
    stop: () => guest.stopQemu(),
    close: async () => {
      await guest.close();
      // A QEMU that runs on (SIGTERM) keeps its sockets: the next guest process adopts it through them.
      if (!qemuRuns(ctx.dir, ctx.config)) await guest.cleanup();
    },
  };
});
