'use strict'
// The zig toolchain for building the linux-x64-gnu addon against glibc 2.17 (`napi build -x`, i.e.
// `cargo zigbuild --target x86_64-unknown-linux-gnu.2.17`): `zig` and `cargo-zigbuild` from PATH,
// else from the PyPI packages `ziglang` and `cargo-zigbuild`, installed once into the git-ignored
// virtualenv .matrix/zig.
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
/** The target napi builds the published linux-x64-gnu binary for. */
const GLIBC_TARGET = 'x86_64-unknown-linux-gnu.2.17'
/** The highest glibc symbol version the published binary may need. */
const MAX_GLIBC = '2.17'

const runs = (cmd, args, env) => spawnSync(cmd, args, { env, stdio: 'ignore' }).status === 0

/** Whether this host builds the linux-x64-gnu binary (Linux, x64, glibc). */
function isLinuxX64Gnu() {
  return process.platform === 'linux' && process.arch === 'x64' && !!process.report?.getReport?.().header?.glibcVersionRuntime
}

/**
 * The environment in which `napi build -x` finds zig and cargo-zigbuild; installs them into
 * .matrix/zig when needed. Returns `{ env }` or `{ error }`.
 */
function zigEnv(log = console.log) {
  if (runs('cargo-zigbuild', ['--version']) && runs('zig', ['version'])) return { env: process.env }
  const venv = path.join(root, '.matrix', 'zig')
  const bin = path.join(venv, 'bin')
  const env = { ...process.env, PATH: `${bin}${path.delimiter}${process.env.PATH}` }
  const ready = () => fs.existsSync(path.join(bin, 'cargo-zigbuild')) && runs(path.join(bin, 'python3'), ['-m', 'ziglang', 'version'], env)
  if (ready()) return { env }
  log(`zig: installing the PyPI packages ziglang and cargo-zigbuild into ${path.relative(root, venv)}`)
  const python = ['python3', 'python'].find(p => runs(p, ['--version']))
  if (!python) return { error: 'python3 is not on PATH (needed for the PyPI packages ziglang and cargo-zigbuild)' }
  const steps = [
    [python, ['-m', 'venv', venv]],
    [path.join(bin, 'python3'), ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', 'ziglang', 'cargo-zigbuild']]
  ]
  for (const [cmd, args] of steps) {
    const r = spawnSync(cmd, args, { stdio: 'inherit' })
    if (r.status !== 0) return { error: `\`${cmd} ${args.join(' ')}\` failed` }
  }
  return ready() ? { env } : { error: `zig or cargo-zigbuild missing in ${venv} after installing them` }
}

/** The highest `GLIBC_x.y` symbol version a shared object needs, via `objdump -T`. */
function maxGlibc(file) {
  const r = spawnSync('objdump', ['-T', file], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  if (r.status !== 0) throw new Error(`objdump -T ${file} failed: ${r.stderr || r.error?.message}`)
  const versions = [...new Set(r.stdout.match(/GLIBC_\d+(\.\d+)+/g) || [])].map(v => v.slice(6))
  return versions.sort(compareVersions).pop()
}

function compareVersions(a, b) {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) - (y[i] || 0)
  return 0
}

module.exports = { GLIBC_TARGET, MAX_GLIBC, isLinuxX64Gnu, zigEnv, maxGlibc, compareVersions }
