/** Reading a guest's console log in bounded chunks (src/guest/console.ts), on real files. */
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CONSOLE_CHUNK_BYTES, readConsoleChunk } from '../../src/guest/console.js';

describe('guest console log: bounded chunks at byte offsets', function () {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ferry-console-'));
    file = path.join(dir, 'console.log');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** Every chunk from `offset` to the end, as a reader following the log takes them. */
  async function readAll(offset = 0): Promise<{ text: string; chunks: number; offset: number }> {
    let text = '';
    let chunks = 0;
    for (;;) {
      const c = await readConsoleChunk(file, offset);
      if (c.offset === offset) return { text, chunks, offset };
      assert.ok(Buffer.byteLength(c.text) <= CONSOLE_CHUNK_BYTES);
      text += c.text;
      chunks++;
      offset = c.offset;
    }
  }

  it('is empty before the hypervisor wrote anything, and refuses an offset past the end', async function () {
    assert.deepEqual(await readConsoleChunk(file, 0), { text: '', offset: 0, size: 0 });
    await assert.rejects(readConsoleChunk(file, 1), { code: 'ERR_FERRY_INPUT' });
    writeFileSync(file, 'tick 1\r\n');
    assert.deepEqual(await readConsoleChunk(file, 0), { text: 'tick 1\r\n', offset: 8, size: 8 });
    assert.deepEqual(await readConsoleChunk(file, 8), { text: '', offset: 8, size: 8 });
    await assert.rejects(readConsoleChunk(file, 9), /offset 9 is past the end of the console log \(8 bytes\)/);
  });

  it('reads a log larger than a chunk in chunks that join up to it, and picks up what is appended', async function () {
    const log = Array.from({ length: 20_000 }, (_, i) => `tick ${i} dirtied=${i * 7}\r\n`).join('');
    writeFileSync(file, log);
    const all = await readAll();
    assert.equal(all.text, log);
    assert.ok(all.chunks > 3, `${all.chunks} chunks`);
    appendFileSync(file, 'check 1 ok pages=8192\r\n');
    assert.equal((await readAll(all.offset)).text, 'check 1 ok pages=8192\r\n');
  });

  it('never splits a UTF-8 character between chunks: a cut one waits for the next read', async function () {
    // A 4-byte character straddling the chunk boundary, then one the guest is still writing.
    const head = 'x'.repeat(CONSOLE_CHUNK_BYTES - 2);
    const bytes = Buffer.concat([Buffer.from(`${head}\u{1F600}é`), Buffer.from('€').subarray(0, 2)]);
    writeFileSync(file, bytes);
    const first = await readConsoleChunk(file, 0);
    assert.equal(first.text, head);
    assert.equal(first.offset, CONSOLE_CHUNK_BYTES - 2);
    const second = await readConsoleChunk(file, first.offset);
    assert.equal(second.text, '\u{1F600}é');
    // The last two bytes are two thirds of a euro sign: nothing to give yet.
    assert.deepEqual(await readConsoleChunk(file, second.offset), { text: '', offset: second.offset, size: bytes.length });
    appendFileSync(file, Buffer.from('€').subarray(2));
    assert.equal((await readConsoleChunk(file, second.offset)).text, '€');
  });

  it('passes bytes that are not UTF-8 at all on as replacement characters instead of stalling', async function () {
    writeFileSync(file, Buffer.from([0x41, 0xff, 0xfe, 0x80, 0x42, 0x0a]));
    const all = await readAll();
    assert.equal(all.text, 'A\ufffd\ufffd\ufffdB\n');
    assert.equal(all.offset, 6);
    appendFileSync(file, Buffer.from([0xff]));
    assert.deepEqual(await readConsoleChunk(file, 6), { text: '\ufffd', offset: 7, size: 7 });
  });
});
