/**
 * Runs a suite once per crypto backend, and once per implementation inside the native backend
 * (vaes-avx512, vaes-avx2, evp), so every path that can ship is tested. A backend that cannot load here shows
 * as pending with the reason, instead of silently not being tested.
 */
import {
  loadBackend,
  nativeBackend,
  nativeImplementations,
  nativeUnavailableReason,
  BACKEND_NAMES,
  type Backend,
  type BackendName,
} from '../../src/crypto/index.js';

export interface BackendVariant {
  /** e.g. "node", "native:vaes-avx2" */
  label: string;
  name: BackendName;
  /** Loads it, or throws with the reason it cannot load here. */
  load: () => Promise<Backend>;
}

export function backendVariants(): BackendVariant[] {
  const out: BackendVariant[] = [];
  for (const name of BACKEND_NAMES) {
    if (name === 'native' && nativeUnavailableReason() === null) {
      for (const impl of nativeImplementations()) {
        out.push({ label: `native:${impl}`, name, load: async () => nativeBackend(impl) });
      }
    } else {
      out.push({ label: name, name, load: () => loadBackend(name) });
    }
  }
  return out;
}

/**
 * Skips the running suite, printing why, when a backend cannot load here; with
 * FERRY_REQUIRE_NATIVE=1 (the sanitizer CI run) a native backend that does not load fails instead.
 */
export function skipBecause(ctx: Mocha.Context, label: string, reason: string): never {
  if (process.env.FERRY_REQUIRE_NATIVE === '1' && label.startsWith('native')) {
    throw new Error(`FERRY_REQUIRE_NATIVE=1 but ${label} cannot load: ${reason}`);
  }
  console.log(`      skipped: ${label} cannot load here: ${reason}`);
  ctx.skip();
}

export function forEachBackend(title: string, body: (get: () => Backend, name: BackendName) => void): void {
  for (const variant of backendVariants()) {
    describe(`${title} [${variant.label}]`, function () {
      let backend: Backend | undefined;
      before(async function () {
        try {
          backend = await variant.load();
        } catch (err) {
          skipBecause(this, variant.label, (err as Error).message);
        }
      });
      body(() => backend!, variant.name);
    });
  }
}

/** Loads every variant that loads here (for cross-backend tests), with the labels of those that do not. */
export async function loadAllBackends(): Promise<{ backends: { label: string; backend: Backend }[]; missing: string[] }> {
  const backends: { label: string; backend: Backend }[] = [];
  const missing: string[] = [];
  for (const v of backendVariants()) {
    try {
      backends.push({ label: v.label, backend: await v.load() });
    } catch (err) {
      if (process.env.FERRY_REQUIRE_NATIVE === '1' && v.name === 'native') throw err;
      missing.push(`${v.label}: ${(err as Error).message}`);
    }
  }
  return { backends, missing };
}
