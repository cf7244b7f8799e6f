// @ts-check
// The linter's rules: typescript-eslint's recommended set (syntax-only, so `npm test` stays quick),
// with the few exceptions ferry's code has reasons for, each said beside it. Formatting is
// prettier's (.prettierrc.json), not the linter's.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'build-*/', 'node_modules/', 'native/', 'bench/results/', '.scratch/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2022, sourceType: 'module' },
    rules: {
      // `_name` marks a value taken apart to be dropped (a key out of a spec, say).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
      ],
    },
  },
  {
    // Every timeout, deadline and duration runs on the monotonic clock, so a clock jump (NTP, an
    // operator's `date -s`) neither fires nor stalls one; Date.now() is for times that mean a date.
    files: ['src/**/*.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        { object: 'Date', property: 'now', message: 'timeouts and durations use performance.now(); a date is `new Date()`' },
      ],
    },
  },
  {
    // Build scripts and tool configs run in Node as plain JavaScript.
    files: ['**/*.mjs', '**/*.cjs'],
    languageOptions: { globals: globals.node },
  },
  {
    // Tests read the JSON that the CLI, the agents and the wire give back, whose shape the
    // assertions themselves check: `any` is the honest type of such a reply.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
