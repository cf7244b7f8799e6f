// Test-only preload (node --import): this process's wall clock jumps an hour forward, then an hour
// back, every JUMP_MS, as an NTP step or an operator's `date -s` would move it. (Never behind the
// true time: certificates made a moment ago would rightly not be valid yet.) Date.now() and
// `new Date()` follow the jumps; the monotonic clock (performance.now(), timers) does not, as in
// the kernel. Loaded into agents, guest processes and the CLI through NODE_OPTIONS.
const JUMP_MS = 250;
const HOUR_MS = 3_600_000;
const RealDate = globalThis.Date;
let offset = 0;
setInterval(() => (offset = offset === 0 ? HOUR_MS : 0), JUMP_MS).unref();

class JumpingDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(RealDate.now() + offset);
    else super(...args);
  }
  static now() {
    return RealDate.now() + offset;
  }
}
globalThis.Date = JumpingDate;
