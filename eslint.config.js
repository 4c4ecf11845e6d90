'use strict'
const js = require('@eslint/js')
const globals = require('globals')

module.exports = [
  { ignores: ['native/**', 'node_modules/**', 'target/**', '.matrix/**', '__test__/.tmp/**', 'npm/**'] },
  js.configs.recommended,
  {
    files: ['**/*.js'],
    languageOptions: { ecmaVersion: 2022, sourceType: 'commonjs', globals: { ...globals.node } },
    rules: { 'no-unused-vars': ['error', { argsIgnorePattern: '^_', caughtErrors: 'none' }] }
  },
  {
    files: ['__test__/**/*.js'],
    languageOptions: { globals: { ...globals.jest } }
  }
]
