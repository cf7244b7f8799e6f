/**
 * Text a guest wrote, made safe for a terminal: whatever runs in a guest may write escape
 * sequences that retitle, recolour or query the operator's terminal, so control characters are
 * shown the way `cat -v` shows them (ESC as ^[, DEL as ^?, U+009B as M-^[) and cannot act. Line
 * endings become "\n"; tabs stay. Fed chunk by chunk: a "\r" at the end of one chunk waits to see
 * whether a "\n" follows.
 */
export class TerminalText {
  private pendingReturn = false;

  /** The printable form of `chunk`. */
  feed(chunk: string): string {
    let out = '';
    let text = chunk;
    if (this.pendingReturn) {
      this.pendingReturn = false;
      if (!text.startsWith('\n')) out += '^M';
    }
    if (text.endsWith('\r')) {
      this.pendingReturn = true;
      text = text.slice(0, -1);
    }
    // Control characters are what this replaces: the pattern must name them.
    // eslint-disable-next-line no-control-regex
    return out + text.replace(/\r\n/g, '\n').replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, visible);
  }

  /** What is still held back (a last "\r"), once the text has ended. */
  end(): string {
    const out = this.pendingReturn ? '^M' : '';
    this.pendingReturn = false;
    return out;
  }
}

function visible(c: string): string {
  const code = c.charCodeAt(0);
  if (code === 0x7f) return '^?';
  if (code >= 0x80) return `M-${visible(String.fromCharCode(code - 0x80))}`;
  return `^${String.fromCharCode(code + 0x40)}`;
}
