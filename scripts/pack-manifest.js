#!/usr/bin/env node
// `prepack` / `postpack`: the published package.json has no install-time script. In a clone,
// `prepare` builds the native addon on `npm install`; in the tarball it would be an install script
// without its file (scripts/ is not shipped) and npm 11 asks users to approve it. So `npm pack` and
// `npm publish` pack a manifest without `prepare` (and without any other install hook), and
// `postpack` puts the original back byte for byte.
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const INSTALL_SCRIPTS = ['preinstall', 'install', 'postinstall', 'prepare']
const manifest = path.join(process.cwd(), 'package.json')
const backup = path.join(process.cwd(), '.package.json.prepack')

const step = process.argv[2]
if (step === 'strip') {
  // A backup left by a pack that died before postpack is the original: restore it first.
  if (fs.existsSync(backup)) fs.renameSync(backup, manifest)
  const text = fs.readFileSync(manifest, 'utf8')
  const pkg = JSON.parse(text)
  const scripts = { ...pkg.scripts }
  for (const s of INSTALL_SCRIPTS) delete scripts[s]
  fs.writeFileSync(backup, text)
  fs.writeFileSync(manifest, JSON.stringify({ ...pkg, scripts }, null, 2) + '\n')
} else if (step === 'restore') {
  if (fs.existsSync(backup)) fs.renameSync(backup, manifest)
} else {
  console.error('usage: pack-manifest.js strip|restore')
  process.exit(2)
}
