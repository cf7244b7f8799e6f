/**
 * The peers `ferry bench paper` measures in the same run, so that its figures read as ratios on
 * this machine: iperf3 on loopback, `openssl speed` for AES-256-GCM, Node's own TLS 1.3 with
 * AES-256-GCM over loopback, and QEMU's own migration (plain and TLS) where QEMU is installed.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { connect, createServer } from 'node:tls';
import { initPki, issueHostCertificate } from '../coordinator/pki.js';
import { iperf3 } from './channel.js';
import { opensslSpeed } from './crypto-measure.js';
import { makeQemuTlsDir, qemuMissing, runQemuMigration, writeRandomFile, type QemuMigrationResult } from './qemu-migration.js';

export interface Peers {
  iperf3Gbps: number | null;
  /** `openssl speed -evp aes-256-gcm` at 64 KiB, GB/s of plaintext; with the reason when it did not run. */
  opensslGBps: number | null;
  nodeTlsGbps: number | null;
  qemu: QemuMigrationResult[];
  notes: string[];
}

const MiB = 2 ** 20;

/** One TLS 1.3 connection on loopback (AES-256-GCM, certificates of a fresh CA) carrying `bytes`: Gbit/s of payload. */
async function nodeTls(bytes: number): Promise<number> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-tls-'));
  try {
    const pki = await initPki(path.join(dir, 'pki'));
    const keyFile = path.join(dir, 'peer.key');
    const cert = await issueHostCertificate(pki, 'peer', keyFile);
    const key = readFileSync(keyFile);
    const ca = readFileSync(pki.caCert);
    const tls = { minVersion: 'TLSv1.3' as const, ciphersuites: 'TLS_AES_256_GCM_SHA384' };
    let received = 0;
    let started = 0;
    const done = new Promise<number>((resolve, reject) => {
      const server = createServer({ ...tls, key, cert }, (socket) => {
        socket.on('data', (chunk: Buffer) => {
          if (received === 0) started = performance.now();
          received += chunk.length;
          if (received >= bytes) {
            const seconds = (performance.now() - started) / 1000;
            socket.end();
            server.close();
            resolve((received * 8) / seconds / 1e9);
          }
        });
        socket.on('error', reject);
      });
      server.listen(0, '127.0.0.1', () => {
        const port = (server.address() as AddressInfo).port;
        const client = connect({ ...tls, host: '127.0.0.1', port, ca, servername: 'peer' }, () => {
          const chunk = Buffer.alloc(256 * 1024, 0x5a);
          let sent = 0;
          const pump = (): void => {
            while (sent < bytes) {
              sent += chunk.length;
              if (!client.write(chunk)) return void client.once('drain', pump);
            }
          };
          pump();
        });
        client.on('error', reject);
      });
    });
    return await done;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function measurePeers(o: { quick: boolean; qemuMemoryBytes: number; progress: (line: string) => void }): Promise<Peers> {
  const notes: string[] = [];
  o.progress('peers: iperf3 on loopback, 2 streams...');
  const iperf3Gbps = await iperf3(2, o.quick ? 1 : 5);
  if (iperf3Gbps === null) notes.push('iperf3 is not installed or did not run');
  o.progress('peers: openssl speed -evp aes-256-gcm...');
  const speed = opensslSpeed(notes);
  o.progress('peers: Node TLS 1.3, AES-256-GCM, on loopback...');
  const nodeTlsGbps = await nodeTls(o.quick ? 64 * MiB : 1024 * MiB).catch((err: Error) => {
    notes.push(`Node TLS: ${err.message}`);
    return null;
  });
  const qemu: QemuMigrationResult[] = [];
  const missing = o.quick ? 'a quick run leaves QEMU out (ferry bench qemu measures it)' : qemuMissing();
  if (missing) notes.push(`QEMU's own migration: ${missing}`);
  else {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-paper-qemu-'));
    try {
      const ramFile = path.join(dir, 'ram.bin');
      writeRandomFile(ramFile, o.qemuMemoryBytes);
      const tlsDir = await makeQemuTlsDir(dir);
      for (const mode of ['plain', 'tls'] as const) {
        o.progress(`peers: QEMU's own migration, ${mode}, ${o.qemuMemoryBytes / MiB} MiB...`);
        qemu.push(await runQemuMigration({ dir, ramFile, memoryBytes: o.qemuMemoryBytes, mode, tlsDir }));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return { iperf3Gbps, opensslGBps: speed.gbps?.[65536] ?? null, nodeTlsGbps, qemu, notes };
}
