/** Reading the CLI's --json output in end-to-end tests. */
import assert from 'node:assert/strict';

/** Every stdout line is a JSON object with a type (asserted); returns them in order. */
export function jsonLines(stdout: string): Record<string, any>[] {
  const lines = stdout
    .trim()
    .split('\n')
    .filter((l) => l !== '');
  return lines.map((l) => {
    const o = JSON.parse(l);
    assert.equal(typeof o.type, 'string', l);
    return o;
  });
}

/** Where each guest is and which process runs it: what "changes nothing" compares. */
export function placements(guests: Record<string, any>[]): string[] {
  return guests.map((g) => `${g.name}@${g.host}:${g.state}:${g.pid}`).sort();
}
