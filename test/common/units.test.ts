import assert from 'node:assert/strict';
import { parseDuration, parseRate, parseSize, formatBytes, formatRate } from '../../src/common/units.js';

describe('units', function () {
  it('parses sizes: binary by default, decimal with KB/MB/GB', function () {
    assert.equal(parseSize('1GiB'), 2 ** 30);
    assert.equal(parseSize('1G'), 2 ** 30);
    assert.equal(parseSize('512MiB'), 512 * 2 ** 20);
    assert.equal(parseSize('2GB'), 2e9);
    assert.equal(parseSize('4096'), 4096);
    assert.equal(parseSize('1.5GiB'), 1.5 * 2 ** 30);
  });

  it('parses rates: bits for bit/b units, bytes for B units', function () {
    assert.equal(parseRate('10Gbit'), 10e9 / 8);
    assert.equal(parseRate('10Gb'), 10e9 / 8);
    assert.equal(parseRate('1Gbit/s'), 1e9 / 8);
    assert.equal(parseRate('200MB'), 200e6);
    assert.equal(parseRate('200MiB'), 200 * 2 ** 20);
  });

  it('parses durations', function () {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('2s'), 2000);
    assert.equal(parseDuration('10m'), 600_000);
    assert.equal(parseDuration('250'), 250);
  });

  it('refuses malformed values with ERR_FERRY_INPUT naming the option', function () {
    for (const [fn, text] of [
      [parseSize, '1XB'],
      [parseSize, 'GiB'],
      [parseSize, '-1G'],
      [parseRate, '10Gbogus'],
      [parseDuration, '5 days'],
      [parseSize, '1e400'],
    ] as const) {
      assert.throws(
        () => fn(text, '--memory'),
        (e: { code?: string; message?: string }) => {
          return e.code === 'ERR_FERRY_INPUT' && e.message!.startsWith('--memory');
        },
      );
    }
  });

  it('formats for people', function () {
    assert.equal(formatBytes(1536), '1.50 KiB');
    assert.equal(formatBytes(2 ** 30), '1.00 GiB');
    assert.equal(formatRate(10e9 / 8), '10.00 Gbit/s');
  });
});
