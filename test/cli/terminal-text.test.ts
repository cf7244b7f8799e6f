/** What `ferry vm console` shows on a terminal: the guest's text with its control characters disarmed. */
import assert from 'node:assert/strict';
import { TerminalText } from '../../src/cli/terminal-text.js';

describe('cli: guest text on a terminal', function () {
  it('keeps lines and tabs, turns CR LF into LF, and shows other control characters as cat -v does', function () {
    const t = new TerminalText();
    assert.equal(t.feed('tick 1\r\n\tcheck 1 ok\r\n'), 'tick 1\n\tcheck 1 ok\n');
    // An escape sequence that would retitle the terminal, a bell, DEL, and a C1 CSI (U+009B).
    assert.equal(t.feed('\u001b]0;pwned\u0007 \u007f \u009b2J\n'), '^[]0;pwned^G ^? M-^[2J\n');
    assert.equal(t.feed('progress 10%\rprogress 20%\n'), 'progress 10%^Mprogress 20%\n');
    assert.equal(t.feed('été ✓\n'), 'été ✓\n');
  });

  it('holds a CR at the end of a chunk until it sees whether an LF follows', function () {
    const t = new TerminalText();
    assert.equal(t.feed('tick 1\r'), 'tick 1');
    assert.equal(t.feed('\ntick 2\r'), '\ntick 2');
    assert.equal(t.feed('x'), '^Mx');
    assert.equal(t.feed('\r'), '');
    assert.equal(t.end(), '^M');
    assert.equal(t.end(), '');
  });
});
