/**
 * Where a command's output goes (the npm/cli rule): stdout carries results only; logs, warnings
 * and progress go to stderr. With --json, stdout is one JSON object per line and nothing else.
 *
 * A reader that stops reading (`ferry vm list | head -1`) closes the pipe: as Unix tools do, the
 * command says nothing more on that stream and no trace appears, but it does not stop half way
 * through what it was doing on the hosts; it finishes, and exits with its own status.
 */
import chalk, { Chalk } from 'chalk';

export interface OutputOptions {
  json: boolean;
  debug: boolean;
  stdout?: NodeJS.WritableStream & { isTTY?: boolean };
  stderr?: NodeJS.WritableStream & { isTTY?: boolean };
}

export class Output {
  readonly json: boolean;
  readonly debug: boolean;
  private readonly stdout: NodeJS.WritableStream & { isTTY?: boolean };
  private readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
  /** Colours for stderr, following stderr's own support (chalk's default follows stdout). */
  readonly errColor: typeof chalk;

  constructor(options: OutputOptions) {
    this.json = options.json;
    this.debug = options.debug;
    this.stdout = options.stdout ?? process.stdout;
    this.stderr = options.stderr ?? process.stderr;
    const level = process.env.NO_COLOR || !this.stderr.isTTY ? 0 : 1;
    this.errColor = new Chalk({ level });
    for (const stream of [this.stdout, this.stderr]) {
      stream.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') this.closed.add(stream);
        else throw err;
      });
    }
  }

  /** Streams whose reader went away: nothing more is written to them. */
  private readonly closed = new Set<NodeJS.WritableStream>();

  /** True once stdout's reader has gone: a command that keeps redrawing (`--watch`) ends there. */
  get stdoutClosed(): boolean {
    return this.closed.has(this.stdout);
  }

  private write(stream: NodeJS.WritableStream, text: string): void {
    if (!this.closed.has(stream)) stream.write(text);
  }

  /** True when progress bars may be drawn: stderr is a terminal and machine output is off. */
  get interactive(): boolean {
    return !this.json && Boolean(this.stderr.isTTY);
  }

  /** A line of human output on stdout (suppressed under --json). */
  print(line = ''): void {
    if (!this.json) this.write(this.stdout, `${line}\n`);
  }

  /** Text on stdout as it is, no newline added (suppressed under --json): a guest's console. */
  text(chunk: string): void {
    if (!this.json) this.stdout.write(chunk);
  }

  /** True when stdout is a terminal (what a guest writes must then not reach it raw). */
  get stdoutIsTerminal(): boolean {
    return Boolean(this.stdout.isTTY);
  }

  /** One JSON object on stdout (only under --json). */
  emit(object: Record<string, unknown>): void {
    if (this.json) this.write(this.stdout, `${JSON.stringify(object)}\n`);
  }

  /** Progress and information for people, on stderr; silent under --json. */
  info(line: string): void {
    if (!this.json) this.write(this.stderr, `${line}\n`);
  }

  /** A warning on stderr, shown even under --json (stdout stays machine-readable). */
  warn(line: string): void {
    this.write(this.stderr, `${this.errColor.yellow('warning:')} ${line}\n`);
  }

  error(line: string): void {
    this.write(this.stderr, `${this.errColor.red('ferry:')} ${line}\n`);
  }

  /** Text for people debugging ferry (--debug), on stderr even under --json. */
  trace(text: string): void {
    this.write(this.stderr, `${text}\n`);
  }

  /** The raw stderr stream, for progress bars. */
  get err(): NodeJS.WritableStream & { isTTY?: boolean } {
    return this.stderr;
  }
}
