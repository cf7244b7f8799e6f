/**
 * The rooms of src/ and the one direction their imports run (docs/architecture.md, "Rooms").
 * `npm test` runs `npm run check:imports`, which fails on any import against these rules.
 *
 *   errors ← common ← crypto ← channel ← migration ← guest ← control ← agent
 *   coordinator: on control, common, errors, and the guest and channel rooms' types and config
 *   cli: on everything but bench;  bench: on anything, loaded by `ferry bench` alone, lazily
 */
const ORDER = ['errors', 'common', 'crypto', 'channel', 'migration', 'guest', 'control', 'agent'];
const room = (name) => (name === 'errors' ? '^src/errors\\.ts$' : `^src/${name}/`);

/** Each room of the chain may import only the rooms before it. */
const chain = ORDER.map((name, i) => ({
  name: `${name}-imports-downward-only`,
  comment: `src/${name} may import only ${ORDER.slice(0, i).join(', ') || 'nothing of ferry'}`,
  severity: 'error',
  from: { path: room(name) },
  to: { path: '^src/', pathNot: [room(name), ...ORDER.slice(0, i).map(room)] },
}));

module.exports = {
  forbidden: [
    ...chain,
    {
      name: 'coordinator-never-the-agent',
      comment: 'the coordinator speaks to agents through src/control only; it uses common, the guest and channel rooms for their types',
      severity: 'error',
      from: { path: '^src/coordinator/' },
      to: {
        path: '^src/',
        pathNot: [
          '^src/coordinator/',
          '^src/control/',
          '^src/common/',
          '^src/errors\\.ts$',
          '^src/guest/(index|types|config)\\.ts$',
          '^src/channel/types\\.ts$',
        ],
      },
    },
    {
      name: 'cli-not-bench-statically',
      comment: 'the product never loads benchmark code; `ferry bench` imports src/bench lazily',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/bench/' },
      to: { path: '^src/bench/', dependencyTypesNot: ['dynamic-import'] },
    },
    {
      name: 'bench-only-from-the-bench-command',
      severity: 'error',
      from: { path: '^src/', pathNot: ['^src/bench/', '^src/cli/commands/bench\\.ts$'] },
      to: { path: '^src/bench/' },
    },
    {
      name: 'nothing-above-cli-imports-cli',
      severity: 'error',
      from: { path: '^src/', pathNot: ['^src/cli/', '^src/bench/'] },
      to: { path: '^src/cli/' },
    },
    {
      name: 'drivers-behind-the-contract',
      comment:
        'a guest driver is reached through src/guest/drivers.ts (and index.ts for its operator-facing helpers), never imported directly; benchmarks measure the drivers themselves (nothing imports src/bench)',
      severity: 'error',
      from: { path: '^src/', pathNot: ['^src/guest/(drivers|index)\\.ts$', '^src/guest/(synthetic|qemu)/', '^src/bench/'] },
      to: { path: '^src/guest/(synthetic|qemu)/' },
    },
    {
      name: 'drivers-apart',
      comment: 'one driver never imports another',
      severity: 'error',
      from: { path: '^src/guest/(synthetic|qemu)/' },
      to: { path: '^src/guest/(synthetic|qemu)/', pathNot: '^src/guest/$1/' },
    },
    {
      name: 'no-cycles',
      severity: 'error',
      comment: "a cycle of type-only imports (a worker and its host naming each other's messages) is no cycle at run time",
      from: { path: '^src/' },
      to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
