'use strict'
// Test helpers: temporary box files and CAP child processes.
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const TMP = path.join(__dirname, '.tmp')

/** A fresh directory for one test's box files. */
function tmpDir(name) {
  const dir = path.join(TMP, `${name}-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`)
  fs.mkdirSync(dir, { recursive: true })
  return dir
}

/**
 * Runs `__test__/apps/box-peer/peer.js` as a separate CAP process with the given messaging config.
 * Resolves with its last stdout line parsed as JSON, its full output and exit code.
 */
function peer(role, requires, args = {}, { timeout = 60000 } = {}) {
  const app = path.join(__dirname, 'apps', 'box-peer')
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(app, 'peer.js'), role, JSON.stringify(args)], {
      cwd: app,
      env: { ...process.env, CDS_CONFIG: JSON.stringify({ requires: { messaging: requires } }), NODE_ENV: 'test' },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let out = ''
    let err = ''
    child.stdout.on('data', d => (out += d))
    child.stderr.on('data', d => (err += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`peer ${role} timed out after ${timeout} ms\nstdout:\n${out}\nstderr:\n${err}`))
    }, timeout)
    child.on('exit', code => {
      clearTimeout(timer)
      const last = out.trim().split('\n').filter(l => l.startsWith('{')).pop()
      let result
      try {
        result = last && JSON.parse(last)
      } catch {
        /* reported below */
      }
      if (code !== 0 || !result) return reject(new Error(`peer ${role} exited with ${code}\nstdout:\n${out}\nstderr:\n${err}`))
      resolve({ ...result, output: out + err })
    })
  })
}

/** Waits until `check()` is truthy or fails after `timeout` ms. */
async function until(check, timeout = 10000, what = 'condition') {
  const t0 = Date.now()
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() - t0 > timeout) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 20))
  }
}

module.exports = { tmpDir, peer, until }

/**
 * Fails (never skips) when a broker is not reachable, saying how to start it. Call it in `beforeAll`
 * of every suite that needs a broker; CI must fail loudly when a broker is down.
 */
async function assertBroker(name, port, howToStart, host = '127.0.0.1') {
  const net = require('node:net')
  const ok = await new Promise(resolve => {
    const s = net.connect({ host, port })
    const done = v => {
      s.destroy()
      resolve(v)
    }
    s.setTimeout(2000, () => done(false))
    s.once('connect', () => done(true))
    s.once('error', () => done(false))
  })
  if (!ok) throw new Error(`${name} is not reachable on ${host}:${port}; this suite needs it. Start it with: ${howToStart}`)
}

/** A free TCP port on loopback (for private broker instances). */
function freePort() {
  const net = require('node:net')
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

module.exports.assertBroker = assertBroker
module.exports.freePort = freePort
