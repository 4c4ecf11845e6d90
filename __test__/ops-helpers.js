'use strict'
// Helpers of the operations suites: the CLI and the ops-app as child processes, configured by
// CDS_CONFIG exactly as an app would be.
const { spawn } = require('node:child_process')
const path = require('node:path')

const APP = path.join(__dirname, 'apps', 'ops-app')
const CLI = path.join(__dirname, '..', 'bin', 'cli.js')
const live = new Set()

function env(requires, extra = {}) {
  return { ...process.env, CDS_CONFIG: JSON.stringify({ requires: { messaging: requires } }), NODE_ENV: 'test', ...extra }
}

/** Runs the CLI in the app folder; resolves with { code, stdout, stderr }. */
function cli(args, requires, { timeout = 30000, extraEnv } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: APP, env: env(requires, extraEnv), stdio: ['ignore', 'pipe', 'pipe'] })
    live.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', d => (stdout += d))
    child.stderr.on('data', d => (stderr += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`cli ${args.join(' ')} timed out\n${stdout}\n${stderr}`))
    }, timeout)
    child.on('exit', code => {
      clearTimeout(timer)
      live.delete(child)
      resolve({ code, stdout, stderr })
    })
  })
}

/** Starts a long-running child (the CLI's tail, or an ops-app role); `lines()` are its JSON stdout lines. */
function start(argv, requires, { extraEnv } = {}) {
  const child = spawn(process.execPath, argv, { cwd: APP, env: env(requires, extraEnv), stdio: ['ignore', 'pipe', 'pipe'] })
  live.add(child)
  let out = ''
  let err = ''
  child.stdout.on('data', d => (out += d))
  child.stderr.on('data', d => (err += d))
  const exited = new Promise(r => child.on('exit', code => (live.delete(child), r(code))))
  return {
    child,
    exited,
    stderr: () => err,
    output: () => out + err,
    lines: () =>
      out
        .split('\n')
        .filter(l => l.startsWith('{'))
        .map(l => JSON.parse(l)),
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM')
      return exited
    }
  }
}

/** The ops-app in `role`. */
const app = (role, requires, args = {}, opts) => start([path.join(APP, 'app.js'), role, JSON.stringify(args)], requires, opts)

/** The CLI as a long-running child (tail). */
const cliChild = (args, requires, opts) => start([CLI, ...args], requires, opts)

function killAll() {
  for (const c of live) c.kill('SIGKILL')
}

module.exports = { cli, app, cliChild, killAll }
