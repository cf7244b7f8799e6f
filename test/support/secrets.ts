/**
 * The key-leak check: searches files (logs, state directories, captured output) for a secret's
 * bytes in every encoding a careless line could have written — raw, hex (both cases), base64 and
 * base64url. Use it once a migration has run: `assert.deepEqual(findSecret([dirA, dirB, logFile], key), [])`.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

function encodings(secret: Uint8Array): Buffer[] {
  const b = Buffer.from(secret);
  const base64 = b.toString('base64');
  return [
    b,
    Buffer.from(b.toString('hex')),
    Buffer.from(b.toString('hex').toUpperCase()),
    Buffer.from(base64.replace(/=+$/, '')),
    Buffer.from(b.toString('base64url')),
  ];
}

function files(target: string): string[] {
  const st = statSync(target, { throwIfNoEntry: false });
  if (!st) return [];
  if (st.isFile()) return [target];
  if (!st.isDirectory()) return [];
  return readdirSync(target).flatMap((f) => files(path.join(target, f)));
}

/** The files (under the given files and directories) or texts that contain the secret; empty when none. */
export function findSecret(targets: readonly (string | { name: string; text: string | Buffer })[], secret: Uint8Array): string[] {
  if (secret.length < 8) throw new Error('a secret shorter than 8 bytes would match by chance');
  const needles = encodings(secret);
  const hits: string[] = [];
  for (const t of targets) {
    const sources =
      typeof t === 'string' ? files(t).map((f) => ({ name: f, data: readFileSync(f) })) : [{ name: t.name, data: Buffer.from(t.text) }];
    for (const s of sources) if (needles.some((n) => s.data.includes(n))) hits.push(s.name);
  }
  return hits;
}
