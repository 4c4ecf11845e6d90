#!/usr/bin/env node
// The release check (last step of `npm test`): builds the linux-x64-gnu addon as it is published
// (zig, glibc 2.17), packs the main package and the platform package npm/linux-x64-gnu as
// `npm publish` would, installs both tarballs into a fresh CAP app in a temp dir (real files, no
// symlink) with @sap/cds 9, and runs the demo and a TypeScript consumer against that install.
// Fails when a tarball lacks a file or ships one it must not, a manifest has an install script, the
// binary needs a glibc newer than 2.17, or the types do not match the runtime exports.
// KEEP_RELEASE_CHECK=1 keeps the temp dir.
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { MAX_GLIBC, isLinuxX64Gnu, maxGlibc, compareVersions } = require('./zig')

const root = path.resolve(__dirname, '..')
const pkg = require('../package.json')
const PLATFORM = 'linux-x64-gnu'
const platformDir = path.join(root, 'npm', PLATFORM)
const platformPkg = require(path.join(platformDir, 'package.json'))
const binary = `${pkg.napi.binaryName}.${PLATFORM}.node`
const INSTALL_SCRIPTS = ['preinstall', 'install', 'postinstall', 'prepare']
const consumerSource = path.join(root, '__test__', 'types', 'consumer.ts')

const t0 = Date.now()
const say = line => console.log(`release-check [${((Date.now() - t0) / 1000).toFixed(0)} s]: ${line}`)
let tmp // the temp dir, removed at the end (also on failure) unless KEEP_RELEASE_CHECK is set
function cleanup() {
  if (!tmp) return
  if (process.env.KEEP_RELEASE_CHECK) say(`kept ${tmp}`)
  else fs.rmSync(tmp, { recursive: true, force: true })
}
function fail(message) {
  console.error(`release-check: FAILED: ${message}`)
  cleanup()
  process.exit(1)
}
/** Runs a command; fails the check with its output when it fails. */
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts })
  if (r.status !== 0) fail(`\`${cmd} ${args.join(' ')}\` exited with ${r.status ?? r.signal ?? r.error?.message}\n${r.stdout || ''}${r.stderr || ''}`)
  return r.stdout
}
// Nothing of this repository may leak into the app: no module redirection, no extra search path.
const cleanEnv = { ...process.env }
for (const k of ['NODE_OPTIONS', 'NODE_PATH', 'CDS_MATRIX_MODULES', 'CDS_CONFIG', 'CDS_ENV', 'NODE_ENV']) delete cleanEnv[k]

if (!isLinuxX64Gnu()) fail(`the release check builds the ${PLATFORM} package and must run on Linux x64 with glibc`)

// 1. The binary as published: release, zig, glibc 2.17 (scripts/prepare.js; cargo reuses its cache).
say('building the release addon (napi build --release -x --target x86_64-unknown-linux-gnu.2.17)')
run(process.execPath, [path.join(root, 'scripts', 'prepare.js')], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CDS_NATIVE_DEBUG: '' } })
const built = path.join(root, 'native', binary)
const glibc = maxGlibc(built)
say(`objdump -T ${path.relative(root, built)}: highest symbol version GLIBC_${glibc}`)
if (!glibc || compareVersions(glibc, MAX_GLIBC) > 0) fail(`${binary} needs GLIBC_${glibc}; it must run on glibc ${MAX_GLIBC} (build it with zig: npm run build)`)

// 2. The platform package gets the binary (napi's convention: napi artifacts into npm/<platform>).
run(path.join(root, 'node_modules', '.bin', 'napi'), ['artifacts', '--output-dir', 'native', '--npm-dir', 'npm'], { cwd: root })
fs.rmSync(path.join(root, binary), { force: true }) // napi artifacts also copies it beside package.json; our loader is in native/
if (fs.statSync(path.join(platformDir, binary)).size !== fs.statSync(built).size) fail(`napi artifacts did not copy ${binary} into npm/${PLATFORM}`)

// 3. Both tarballs, as `npm publish` packs them (prepack/postpack included).
tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cnm-release-'))
function pack(dir) {
  const [info] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: dir }))
  const file = path.join(tmp, info.filename)
  const manifest = JSON.parse(run('tar', ['-xzOf', file, 'package/package.json']))
  return { file, files: info.files.map(f => f.path), manifest }
}
const main = pack(root)
const platform = pack(platformDir)
say(`packed ${path.basename(main.file)} (${main.files.length} files) and ${path.basename(platform.file)} (${platform.files.length} files)`)

const tracked = run('git', ['ls-files', 'lib', 'srv'], { cwd: root }).split('\n').filter(Boolean)
const mainNeeds = ['package.json', 'README.md', 'LICENSE', 'index.js', 'index.d.ts', 'cds-plugin.js', 'native/native.js', 'native/native.d.ts', ...tracked]
const problems = []
for (const f of mainNeeds) if (!main.files.includes(f)) problems.push(`${path.basename(main.file)} lacks ${f}`)
for (const f of main.files) if (/\.node$|^(scripts|src|__test__|bench|npm|examples)\//.test(f)) problems.push(`${path.basename(main.file)} must not ship ${f}`)
for (const f of ['package.json', 'README.md', 'LICENSE', binary]) if (!platform.files.includes(f)) problems.push(`${path.basename(platform.file)} lacks ${f}`)
for (const { file, files, manifest } of [main, platform]) {
  const scripts = INSTALL_SCRIPTS.filter(s => manifest.scripts?.[s])
  if (scripts.length) problems.push(`${path.basename(file)} has install scripts: ${scripts.map(s => `${s}: ${manifest.scripts[s]}`).join('; ')}`)
  if (files.includes('binding.gyp') || manifest.gypfile) problems.push(`${path.basename(file)} would run node-gyp on install`)
}
if (main.manifest.optionalDependencies?.[platformPkg.name] !== pkg.version)
  problems.push(`optionalDependencies['${platformPkg.name}'] must be exactly ${pkg.version}, is ${main.manifest.optionalDependencies?.[platformPkg.name]}`)
if (platform.manifest.version !== pkg.version) problems.push(`${platformPkg.name} is version ${platform.manifest.version}, the main package ${pkg.version} (npm run version keeps them in step)`)
if (problems.length) fail(problems.join('\n  '))

// 4. A fresh CAP app with both tarballs (extracted by npm: real directories) and @sap/cds 9.
const app = path.join(tmp, 'app')
// What the TypeScript consumer needs (cds-types refers to express's and axios's types), in the
// versions the repository has installed, so that npm takes them from its cache.
const typesDeps = Object.fromEntries(
  ['@cap-js/cds-types', '@types/node', '@types/express', 'axios'].map(d => [d, require(require.resolve(`${d}/package.json`, { paths: [root, path.join(root, 'node_modules', '@cap-js', 'cds-types')] })).version])
)
fs.mkdirSync(app)
fs.writeFileSync(
  path.join(app, 'package.json'),
  JSON.stringify(
    {
      name: 'release-check-app',
      private: true,
      dependencies: { '@sap/cds': '^9', [pkg.name]: `file:${main.file}`, [platformPkg.name]: `file:${platform.file}` },
      devDependencies: typesDeps
    },
    null,
    2
  )
)
say('npm install (--prefer-offline) of both tarballs, @sap/cds 9 and @cap-js/cds-types into a fresh app')
run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--legacy-peer-deps', '--loglevel=error'], { cwd: app, env: cleanEnv })
for (const name of [pkg.name, platformPkg.name]) {
  const dir = path.join(app, 'node_modules', name)
  if (!fs.existsSync(dir) || fs.lstatSync(dir).isSymbolicLink()) fail(`node_modules/${name} is not an installed directory`)
}
const nested = path.join(app, 'node_modules', pkg.name, 'node_modules')
if (fs.existsSync(nested)) fail(`npm installed a second copy below ${nested}: ${fs.readdirSync(nested).join(', ')}`)

// 5. What the app loads: the platform package's binary; runtime exports = the d.ts's exported values.
const probe = `const m = require('${pkg.name}'); require('${pkg.name}/lib/native').native()
console.log(JSON.stringify({ keys: Object.keys(m).sort(), binary: Object.keys(require.cache).filter(f => f.endsWith('.node')) }))`
const loaded = JSON.parse(run(process.execPath, ['-e', probe], { cwd: app, env: cleanEnv }))
const expected = path.join(app, 'node_modules', platformPkg.name, binary)
if (loaded.binary.length !== 1 || fs.realpathSync(loaded.binary[0]) !== fs.realpathSync(expected)) fail(`the app loaded ${loaded.binary.join(', ') || 'no binary'}, not ${expected}`)

const ts = require(require.resolve('typescript', { paths: [root] }))
const entry = path.join(app, 'exports.ts')
fs.writeFileSync(entry, `import * as m from '${pkg.name}'\nexport default m\n`)
const program = ts.createProgram([entry], { strict: true, noEmit: true, moduleResolution: ts.ModuleResolutionKind.Node16, module: ts.ModuleKind.Node16, types: [] })
const checker = program.getTypeChecker()
const spec = program.getSourceFile(entry).statements[0].moduleSpecifier
const moduleSymbol = checker.getSymbolAtLocation(spec)
if (!moduleSymbol) fail(`TypeScript does not resolve '${pkg.name}' from the app`)
const declared = checker
  .getExportsOfModule(moduleSymbol)
  .filter(s => (s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s).flags & ts.SymbolFlags.Value)
  .map(s => s.name)
  .sort()
const missingTypes = loaded.keys.filter(k => !declared.includes(k))
const missingRuntime = declared.filter(k => !loaded.keys.includes(k))
if (missingTypes.length || missingRuntime.length)
  fail(`index.d.ts and the runtime exports differ: not declared: ${missingTypes.join(', ') || '-'}; declared but not exported: ${missingRuntime.join(', ') || '-'}`)
say(`exports = index.d.ts values: ${loaded.keys.join(', ')}`)

// 6. The demo (examples/reviews: a box emitter and a receiver, two CAP processes) on the install.
fs.cpSync(path.join(root, 'examples', 'reviews'), path.join(app, 'reviews'), { recursive: true })
const demo = run(process.execPath, [path.join(app, 'reviews', 'run.js')], { cwd: app, env: { ...cleanEnv, REVIEWS: '20' }, timeout: 60000 })
const summary = demo.split('\n').find(l => l.startsWith('demo: emitted')) || ''
if (!/emitted 20, received 20, lost 0, duplicates 0/.test(summary)) fail(`the demo did not deliver 20 of 20:\n${demo}`)
say(summary)

// 7. The TypeScript consumer of the repository (__test__/types: consumer.ts, its shims and
// tsconfig.json, also checked against the sources by `npm test`), here against the installed types.
if (!fs.existsSync(consumerSource)) fail(`the TypeScript consumer ${path.relative(root, consumerSource)} is missing`)
const types = path.join(app, 'types')
fs.cpSync(path.dirname(consumerSource), types, { recursive: true })
const tsc = require.resolve('typescript/bin/tsc', { paths: [root] })
run(process.execPath, [tsc, '--noEmit', '--strict', '-p', types], { cwd: types, env: cleanEnv })
say(`tsc --noEmit --strict -p types: consumer.ts type-checks against the installed ${pkg.name}`)

cleanup()
say(`passed in ${((Date.now() - t0) / 1000).toFixed(0)} s`)
