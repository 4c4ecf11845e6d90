#!/usr/bin/env node
// Runs on `npm install` in a clone of this repository: builds the native addon. (The CAP test apps
// under __test__/apps resolve the package by name through the devDependency `file:.`.)
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
if (!fs.existsSync(path.join(root, 'Cargo.toml'))) process.exit(0) // installed from the registry

const napi = path.join(root, 'node_modules', '.bin', 'napi')
if (!fs.existsSync(napi)) {
  console.error('prepare: @napi-rs/cli is missing; run `npm install` in the repository root')
  process.exit(1)
}
const profile = process.env.CDS_NATIVE_DEBUG ? [] : ['--release']
const args = ['build', '--platform', ...profile, '--output-dir', 'native', '--js', 'native.js', '--dts', 'native.d.ts']
console.log(`prepare: napi ${args.join(' ')}`)
const r = spawnSync(napi, args, { cwd: root, stdio: 'inherit' })
if (r.status !== 0) {
  console.error('prepare: building the native addon failed (see above); Rust 1.88+ and gcc are required')
  process.exit(r.status || 1)
}

