/**
 * Where a command's output goes (the npm/cli rule): stdout carries results only; logs, warnings
 * and progress go to stderr. With --json, stdout is one JSON object per line and nothing else.
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
  }

  /** True when progress bars may be drawn: stderr is a terminal and machine output is off. */
  get interactive(): boolean {
    return !this.json && Boolean(this.stderr.isTTY);
  }

  /** A line of human output on stdout (suppressed under --json). */
  print(line = ''): void {
    if (!this.json) this.stdout.write(`${line}\n`);
  }

  /** One JSON object on stdout (only under --json). */
  emit(object: Record<string, unknown>): void {
    if (this.json) this.stdout.write(`${JSON.stringify(object)}\n`);
  }

  /** Progress and information for people, on stderr; silent under --json. */
  info(line: string): void {
    if (!this.json) this.stderr.write(`${line}\n`);
  }

  /** A warning on stderr, shown even under --json (stdout stays machine-readable). */
  warn(line: string): void {
    this.stderr.write(`${this.errColor.yellow('warning:')} ${line}\n`);
  }

  error(line: string): void {
    this.stderr.write(`${this.errColor.red('ferry:')} ${line}\n`);
  }

  /** The raw stderr stream, for progress bars. */
  get err(): NodeJS.WritableStream & { isTTY?: boolean } {
    return this.stderr;
  }
}
