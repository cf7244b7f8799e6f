/**
 * The synthetic guest process: `node dist/guest/synthetic/main.js GUESTDIR [--incoming]`, a guest
 * process (src/guest/guest-process.ts) whose guest is a SyntheticGuest. Started with --incoming
 * it waits for a migration instead of running its workload.
 */
import { runGuestProcess } from '../guest-process.js';
import { SyntheticGuestProcess } from './guest-process.js';

runGuestProcess('synthetic', (ctx) => new SyntheticGuestProcess(ctx));
