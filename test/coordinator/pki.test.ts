/** The cluster PKI, checked by two independent verifiers: the openssl command and node's X509Certificate. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkCertificate, COORDINATOR_CN, initPki, issueHostCertificate, type PkiPaths } from '../../src/coordinator/pki.js';

function verify(ca: string, cert: string, purpose: string): boolean {
  try {
    execFileSync('openssl', ['verify', '-CAfile', ca, '-purpose', purpose, cert], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

describe('coordinator: PKI', function () {
  let dir: string;
  let p: PkiPaths;
  let hostCert: string;

  before(async function () {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-pki-'));
    p = await initPki(path.join(dir, 'pki'));
    writeFileSync(path.join(dir, 'h.crt'), await issueHostCertificate(p, 'alpha', path.join(dir, 'h.key')));
    hostCert = path.join(dir, 'h.crt');
  });
  after(function () {
    rmSync(dir, { recursive: true, force: true });
  });

  it('makes a P-256 CA with CA:TRUE, and keys readable by their owner only', function () {
    const ca = new X509Certificate(readFileSync(p.caCert));
    assert.equal(ca.ca, true);
    assert.equal(ca.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    for (const key of [p.caKey, p.coordinatorKey, path.join(dir, 'h.key')]) assert.equal(statSync(key).mode & 0o777, 0o600, key);
    assert.equal(statSync(p.dir).mode & 0o777, 0o700);
  });

  it('gives hosts serverAuth and clientAuth for their name, and the coordinator clientAuth only', function () {
    assert.ok(verify(p.caCert, hostCert, 'sslserver'));
    assert.ok(verify(p.caCert, hostCert, 'sslclient'));
    assert.ok(verify(p.caCert, p.coordinatorCert, 'sslclient'));
    assert.ok(!verify(p.caCert, p.coordinatorCert, 'sslserver'));
    const host = new X509Certificate(readFileSync(hostCert));
    assert.equal(host.ca, false);
    assert.equal(host.checkHost('alpha'), 'alpha');
    assert.equal(host.checkHost('beta'), undefined);
    assert.match(new X509Certificate(readFileSync(p.coordinatorCert)).subject, new RegExp(`CN=${COORDINATOR_CN}`));
  });

  it('tells a certificate of this CA from one of another CA', async function () {
    assert.equal(checkCertificate(readFileSync(hostCert), readFileSync(p.caCert), 'host').subject, 'CN=alpha');
    const other = await initPki(path.join(dir, 'other'));
    assert.throws(() => checkCertificate(readFileSync(hostCert), readFileSync(other.caCert), 'host'), {
      code: 'ERR_FERRY_REFUSED',
      message: /not signed by the cluster CA/,
    });
    assert.ok(!verify(other.caCert, hostCert, 'sslserver'));
  });

  it('never overwrites an existing cluster', async function () {
    const before = readFileSync(p.caKey);
    await assert.rejects(initPki(p.dir), { code: 'ERR_FERRY_INPUT', message: /already exists/ });
    assert.deepEqual(readFileSync(p.caKey), before);
  });
});
