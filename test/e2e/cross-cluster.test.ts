/**
 * A move to a host of another cluster (`--to OTHER_CLUSTER_FILE:HOST`): each agent gets the spec
 * over its own cluster's mTLS, with its own CA; the data plane needs nothing but the key.
 */
import assert from 'node:assert/strict';
import { ferry, ferryOk, TestCluster } from '../agent/helpers/cluster.js';
import { jsonLines } from './helpers.js';

describe('e2e: cross-cluster migration', function () {
  let east: TestCluster;
  let west: TestCluster;

  before(async function () {
    east = TestCluster.create();
    west = TestCluster.create();
    await east.addHost('a');
    await west.addHost('a'); // the same name in another cluster is another host
    await Promise.all([east.startAgent('a'), west.startAgent('a')]);
  });
  after(async function () {
    await east?.stop();
    await west?.stop();
  });

  it('moves a guest to a host of another cluster, each agent told over its own CA', function () {
    ferryOk(['vm', 'create', 'x1', '--host', 'a', '--memory', '64MiB', '--workload', 'kv:get=500,set=100'], east.env);
    const r = ferry(['migrate', 'x1', '--to', `${west.file}:a`, '--verify', '--json'], east.env);
    assert.equal(r.status, 0, r.stderr);
    const result = jsonLines(r.stdout).pop()!;
    assert.equal(result.ok, true);
    assert.equal(result.to, `${west.file}:a`);
    assert.equal(result.mode, 'encrypted');
    assert.equal(result.verified, true);
    const inWest = jsonLines(ferryOk(['vm', 'list', '--json'], west.env).stdout);
    assert.deepEqual(inWest.map((g) => [g.name, g.host, g.state]), [['x1', 'a', 'running']]);
    assert.deepEqual(jsonLines(ferryOk(['vm', 'list', '--json'], east.env).stdout), []);
  });

  it('refuses a cluster file that does not exist, or a host it does not have', function () {
    const missing = ferry(['migrate', 'x1', '--to', '/nonexistent/cluster.yaml:a'], west.env);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /cannot read cluster file \/nonexistent\/cluster\.yaml: ENOENT/);
    const nohost = ferry(['migrate', 'x1', '--to', `${east.file}:zz`], west.env);
    assert.equal(nohost.status, 2);
    assert.match(nohost.stderr, /no host "zz" in .*cluster\.yaml/);
  });
});
