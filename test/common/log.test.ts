/** Structured logs never carry key material, whatever a caller passes them. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '../../src/common/log.js';
import { findSecret } from '../support/secrets.js';

describe('agent: logs', function () {
  it('writes JSON lines and redacts secrets and binary data', function () {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-log-'));
    const file = path.join(dir, 'log');
    const fd = openSync(file, 'w');
    const key = randomBytes(32);
    const nonce = randomBytes(8);
    try {
      const log = createLogger({ fd, base: { host: 'a' } }).child({ migrationId: 'm-1' });
      log.info('spec received', { spec: { key: key.toString('base64'), nonce: nonce.toString('hex') }, streams: 4 });
      log.warn('careless', { buffer: key, nested: { deeper: { secret: key.toString('hex'), password: 'x' } }, err: new Error('boom') });
      log.debug('not shown at info level');
      closeSync(fd);
      const lines = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      assert.equal(lines.length, 2);
      assert.equal(lines[0].msg, 'spec received');
      assert.equal(lines[0].host, 'a');
      assert.equal(lines[0].migrationId, 'm-1');
      assert.equal(lines[0].spec, '[redacted]');
      assert.equal(lines[1].buffer, '[32 bytes]');
      assert.equal(lines[1].nested.deeper.secret, '[redacted]');
      assert.equal(lines[1].err.message, 'boom');
      assert.deepEqual(findSecret([file], key), []);
      assert.deepEqual(findSecret([{ name: 'control', text: key.toString('hex') }], key), ['control'], 'the helper finds what is there');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
