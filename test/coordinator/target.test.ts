/** `--to HOST` and `--to FILE:HOST`, and version comparison for probe's upgradeNeeded. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseCluster } from '../../src/coordinator/cluster.js';
import { resolveTarget } from '../../src/coordinator/target.js';
import { compareVersions } from '../../src/coordinator/probe.js';

const clusterText = (host: string) =>
  `ca: { cert: ca.crt }\ncoordinator: { cert: c.crt, key: c.key }\nhosts:\n  ${host}:\n    control: 127.0.0.1:7001\n    networks: [127.0.0.1:7101]\n`;

describe('coordinator: migration targets', function () {
  let dir: string;
  before(function () {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-target-'));
    writeFileSync(path.join(dir, 'west.yaml'), clusterText('w1'));
  });
  after(function () {
    rmSync(dir, { recursive: true, force: true });
  });

  const east = () => parseCluster(path.join(dir, 'east.yaml'), clusterText('a'));

  it('a host of this cluster', async function () {
    const t = await resolveTarget(east(), 'a');
    assert.deepEqual([t.host.name, t.crossCluster, t.label], ['a', false, 'a']);
  });

  it('a host of another cluster, by its file (relative paths from the working directory)', async function () {
    const t = await resolveTarget(east(), `${path.relative(process.cwd(), dir)}/west.yaml:w1`);
    assert.equal(t.crossCluster, true);
    assert.equal(t.host.name, 'w1');
    assert.equal(t.cluster.file, path.join(dir, 'west.yaml'));
    assert.equal(t.label, `${path.join(dir, 'west.yaml')}:w1`);
  });

  it('refuses what is not HOST or FILE:HOST, unknown hosts and files', async function () {
    await assert.rejects(resolveTarget(east(), 'A'), { code: 'ERR_FERRY_USAGE' });
    await assert.rejects(resolveTarget(east(), 'west.yaml:'), { code: 'ERR_FERRY_USAGE' });
    await assert.rejects(resolveTarget(east(), 'zz'), { code: 'ERR_FERRY_NOT_FOUND', message: /no host "zz"/ });
    await assert.rejects(resolveTarget(east(), `${dir}/west.yaml:a`), { code: 'ERR_FERRY_NOT_FOUND', message: /west\.yaml \(hosts: w1\)/ });
    await assert.rejects(resolveTarget(east(), `${dir}/none.yaml:a`), { code: 'ERR_FERRY_NOT_FOUND', message: /cannot read cluster file/ });
  });

  it('compares versions numerically', function () {
    assert.equal(compareVersions('0.1.0', '0.1.0'), 0);
    assert.equal(compareVersions('0.9.0', '0.10.0'), -1);
    assert.equal(compareVersions('1.0', '0.99.99'), 1);
    assert.equal(compareVersions('0.1.0-rc.1', '0.1.0'), 0);
  });
});
