/**
 * Runs a suite once per crypto backend. A backend that cannot load here shows as pending with the
 * reason, instead of silently not being tested.
 */
import { loadBackend, BACKEND_NAMES, type Backend, type BackendName } from '../../src/crypto/index.js';

export function forEachBackend(title: string, body: (get: () => Backend, name: BackendName) => void): void {
  for (const name of BACKEND_NAMES) {
    describe(`${title} [${name}]`, function () {
      let backend: Backend | undefined;
      before(async function () {
        try {
          backend = await loadBackend(name);
        } catch (err) {
          const reason = (err as Error).message;
          console.log(`      skipped: backend ${name} cannot load here: ${reason}`);
          this.skip();
        }
      });
      body(() => backend!, name);
    });
  }
}
