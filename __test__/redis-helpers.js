'use strict'
// Helpers of the Redis suites: long-running CAP peer processes and a private, killable redis-server.
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { createClient } = require('redis')
const { freePort, tmpDir, until } = require('./helpers')

const PEER = path.join(__dirname, 'apps', 'redis-peer')

/**
 * Starts `apps/redis-peer/peer.js <role>` (or `<app>/peer.js`) with `cds.requires.messaging = requires`. Returns a handle:
 * `ready` (resolves on its `{"ready":true}` line), `done` (resolves with its last JSON line when it
 * exits with 0), `kill(signal)`, and `output()`.
 */
function startPeer(role, requires, args = {}, { timeout = 55000, env = {}, app = PEER } = {}) {
  const child = spawn(process.execPath, [path.join(app, 'peer.js'), role, JSON.stringify(args)], {
    cwd: app,
    env: { ...process.env, CDS_CONFIG: JSON.stringify({ requires: { messaging: requires } }), NODE_ENV: 'test', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  let err = ''
  let onReady
  let failReady
  const ready = new Promise((resolve, reject) => ((onReady = resolve), (failReady = reject)))
  child.stdout.on('data', d => {
    out += d
    if (out.includes('{"ready":true}')) onReady()
  })
  child.stderr.on('data', d => (err += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), timeout)
  timer.unref()
  live.add(child)
  child.on('exit', () => live.delete(child))
  const done = new Promise((resolve, reject) => {
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      failReady(new Error(`peer ${role} exited before it was ready (${code ?? signal})\n${out}\n${err}`))
      const last = out.trim().split('\n').filter(l => l.startsWith('{')).pop()
      let result
      try {
        result = last && JSON.parse(last)
      } catch {
        /* reported below */
      }
      if (code !== 0 || !result) return reject(new Error(`peer ${role} exited with ${code ?? signal}\nstdout:\n${out}\nstderr:\n${err}`))
      resolve({ ...result, output: out + err })
    })
  })
  ready.catch(() => {})
  done.catch(() => {})
  return { child, ready, done, kill: (sig = 'SIGKILL') => child.kill(sig), output: () => out + err }
}

const live = new Set()
/** Kills every peer still running (call in afterEach/afterAll). */
function killPeers() {
  for (const c of live) c.kill('SIGKILL')
}

/** Runs a peer to its end. */
const runPeer = (...a) => startPeer(...a).done

/** Lines of a peer's record file, parsed. */
function records(file) {
  if (!fs.existsSync(file)) return []
  const lines = fs.readFileSync(file, 'utf8').split('\n')
  lines.pop() // empty, or a line still being written
  return lines.filter(Boolean).map(l => JSON.parse(l))
}

/** A private redis-server on a free loopback port, with an append-only file so restarts keep data. */
async function privateRedis(name, { password } = {}) {
  const port = await freePort()
  const dir = tmpDir(`redis-${name}`)
  let proc
  const auth = password ? ['--requirepass', password] : []
  const start = async () => {
    proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', ...auth], {
      stdio: 'ignore'
    })
    await until(() => ping(port, password), 10000, `redis-server on ${port}`)
  }
  const stop = async () => {
    if (!proc || proc.exitCode !== null) return
    proc.kill('SIGCONT') // a paused server would not exit on SIGTERM
    const exited = new Promise(r => proc.once('exit', r))
    proc.kill('SIGTERM')
    await exited
  }
  await start()
  const url = `redis://${password ? `:${encodeURIComponent(password)}@` : ''}127.0.0.1:${port}`
  // SIGSTOP / SIGCONT: Redis keeps its connections open but answers nothing meanwhile (a stall)
  const pause = () => proc.kill('SIGSTOP')
  const resume = () => proc.kill('SIGCONT')
  return { port, url, start, stop, pause, resume, restart: async () => (await stop(), await start()) }
}

async function ping(port, password) {
  const c = createClient({ url: `redis://127.0.0.1:${port}`, password, socket: { reconnectStrategy: false, connectTimeout: 500 } })
  c.on('error', () => {})
  try {
    await c.connect()
    await c.ping()
    return true
  } catch {
    return false
  } finally {
    await c.disconnect().catch(() => {})
  }
}

/** A node-redis client for assertions. */
async function rawClient(url = 'redis://127.0.0.1:6379') {
  const c = createClient({ url })
  c.on('error', () => {})
  await c.connect()
  return c
}

/** `{ all: [0..n) seen, missing, duplicates }` of the ids in `ids`. */
function tally(ids, n) {
  const count = new Map()
  for (const i of ids) count.set(i, (count.get(i) || 0) + 1)
  const missing = []
  for (let i = 0; i < n; i++) if (!count.has(i)) missing.push(i)
  let duplicates = 0
  for (const c of count.values()) duplicates += c - 1
  return { missing, duplicates, distinct: count.size }
}

module.exports = { killPeers, startPeer, runPeer, records, privateRedis, rawClient, tally, tmpDir, until }
