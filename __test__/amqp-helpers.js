'use strict'
// Helpers of the AMQP suites: RabbitMQ setup and cleanup, peer processes, a TCP proxy to cut.
const { spawn, execFileSync } = require('node:child_process')
const net = require('node:net')
const path = require('node:path')
const { assertBroker } = require('./helpers')

const RABBIT_PORT = 5672
const URL = `amqp://guest:guest@127.0.0.1:${RABBIT_PORT}`
const RUN = `cnm-${process.pid}-${Date.now().toString(36)}`

function onPath(cmd) {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/**
 * What the broker on `port` answers to an AMQP 1.0 SASL protocol header: `'amqp10'` when it speaks
 * AMQP 1.0 (it echoes the header), `'other'` when it answers with another protocol header (RabbitMQ
 * without its AMQP 1.0 plugin answers 0-9-1's), `'down'` when nothing answers.
 */
function amqp10Probe(port = RABBIT_PORT, timeout = 5000) {
  return new Promise(resolve => {
    const header = Buffer.from([0x41, 0x4d, 0x51, 0x50, 3, 1, 0, 0])
    let got = Buffer.alloc(0)
    const s = net.connect(port, '127.0.0.1')
    const done = answer => {
      s.destroy()
      resolve(answer)
    }
    s.setTimeout(timeout, () => done('down'))
    s.on('connect', () => s.write(header))
    s.on('data', d => {
      got = Buffer.concat([got, d])
      if (got.length >= 8) done(got.subarray(0, 8).equals(header) ? 'amqp10' : 'other')
    })
    s.on('error', () => done('down'))
    s.on('close', () => done(got.length ? 'other' : 'down'))
  })
}

/**
 * Makes sure RabbitMQ speaks AMQP 1.0: when it does not yet, enables its AMQP 1.0 plugin
 * (idempotent; `rabbitmq-plugins` boots an Erlang VM and takes half a minute on a loaded machine,
 * so it runs only when needed). Fails loudly when the broker is not reachable.
 */
async function ensureRabbit() {
  await assertBroker('RabbitMQ', RABBIT_PORT, 'apt-get install rabbitmq-server && service rabbitmq-server start && rabbitmq-plugins enable rabbitmq_amqp1_0')
  if ((await amqp10Probe()) === 'amqp10') return
  if (!onPath('rabbitmq-plugins')) throw new Error(`RabbitMQ on 127.0.0.1:${RABBIT_PORT} does not speak AMQP 1.0 and rabbitmq-plugins is not on PATH: run rabbitmq-plugins enable rabbitmq_amqp1_0`)
  try {
    execFileSync('rabbitmq-plugins', ['enable', 'rabbitmq_amqp1_0'], { stdio: 'ignore', timeout: 120000 })
  } catch (e) {
    throw new Error(`rabbitmq-plugins enable rabbitmq_amqp1_0 failed: ${e.message}`)
  }
  const answer = await amqp10Probe()
  if (answer !== 'amqp10') throw new Error(`RabbitMQ on 127.0.0.1:${RABBIT_PORT} still does not speak AMQP 1.0 after rabbitmq-plugins enable rabbitmq_amqp1_0 (probe: ${answer})`)
}

/** Deletes queue `name` now (a test that deletes a queue under a consumer). */
function deleteQueueNow(name) {
  execFileSync('rabbitmqctl', ['delete_queue', name], { stdio: 'ignore', timeout: 60000 })
}

/**
 * Deletes the test queues `names` and, with `matching`, every queue whose name contains it (the
 * product itself never deletes queues). In a detached process nothing waits for: `rabbitmqctl`
 * boots an Erlang VM per call, seconds each on a loaded machine, which made cleanup hooks time out.
 */
function deleteQueues(names, matching) {
  if (!onPath('rabbitmqctl')) return
  const more = matching ? '$(rabbitmqctl list_queues -q --no-table-headers name 2>/dev/null | grep -F -- "$0")' : ''
  const script = `for q in "$@" ${more}; do rabbitmqctl delete_queue "$q" >/dev/null 2>&1; done`
  spawn('sh', ['-c', script, matching || '-', ...names], { detached: true, stdio: 'ignore' }).unref()
}

/** Messages ready in a queue (via rabbitmqctl). */
function queueDepth(name) {
  const out = execFileSync('rabbitmqctl', ['list_queues', '-q', '--no-table-headers', 'name', 'messages'], { encoding: 'utf8' })
  for (const line of out.split('\n')) {
    const [q, n] = line.trim().split(/\s+/)
    if (q === name) return Number(n)
  }
  return undefined
}

/**
 * Starts `__test__/apps/amqp-peer/peer.js`. Returns { ready, progress(n), done, kill }:
 * `ready` resolves at READY, `progress(n)` once it reported n messages, `done` with its JSON result.
 */
function spawnPeer(role, requires, args = {}, { timeout = 55000, cwd } = {}) {
  const app = path.join(__dirname, 'apps', 'amqp-peer')
  // `cwd`: another app directory (its package.json name is the app's name).
  const child = spawn(process.execPath, [path.join(app, 'peer.js'), role, JSON.stringify(args)], {
    cwd: cwd || app,
    env: { ...process.env, CDS_CONFIG: JSON.stringify({ requires: { messaging: requires } }), NODE_ENV: 'test' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  let err = ''
  let count = 0
  const waiters = []
  let readyResolve
  const ready = new Promise(r => (readyResolve = r))
  child.stdout.on('data', d => {
    out += d
    for (const line of String(d).split('\n')) {
      if (line === 'READY') readyResolve()
      const m = /^P (\d+)$/.exec(line)
      if (m) {
        count = Number(m[1])
        for (const w of waiters.filter(w => count >= w.n)) w.resolve()
      }
    }
  })
  child.stderr.on('data', d => (err += d))
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`peer ${role} timed out after ${timeout} ms\nstdout:\n${out.slice(-3000)}\nstderr:\n${err.slice(-3000)}`))
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
      if (code !== 0 || !result) return reject(new Error(`peer ${role} exited with ${code}\nstdout:\n${out.slice(-3000)}\nstderr:\n${err.slice(-3000)}`))
      resolve({ ...result, output: out + err })
    })
  })
  done.catch(() => {}) // observed by the test that awaits it
  return {
    get ready() {
      return Promise.race([ready, done.then(() => Promise.reject(new Error(`peer ${role} ended before READY:\n${out}\n${err}`)))])
    },
    // Rejects with the peer's output when it ends (or times out) before reporting n messages.
    progress: n =>
      count >= n
        ? Promise.resolve()
        : Promise.race([
            new Promise(resolve => waiters.push({ n, resolve })),
            done.then(() => Promise.reject(new Error(`peer ${role} ended after ${count} of ${n} messages:\n${out.slice(-3000)}\n${err.slice(-3000)}`)))
          ]),
    done,
    kill: () => child.kill('SIGKILL')
  }
}

/** A loopback TCP proxy to RabbitMQ that can be cut (all connections dropped, port closed) and reopened. */
function cuttableProxy(targetPort = RABBIT_PORT) {
  const sockets = new Set()
  let server
  let connections = 0
  const listen = port =>
    new Promise((resolve, reject) => {
      server = net.createServer(c => {
        connections++
        const u = net.connect(targetPort, '127.0.0.1')
        sockets.add(c)
        sockets.add(u)
        c.pipe(u)
        u.pipe(c)
        const kill = () => {
          c.destroy()
          u.destroy()
          sockets.delete(c)
          sockets.delete(u)
        }
        c.on('error', kill)
        u.on('error', kill)
        c.on('close', kill)
        u.on('close', kill)
      })
      server.once('error', reject)
      server.listen(port, '127.0.0.1', resolve)
    })
  const cut = () =>
    new Promise(resolve => {
      for (const s of sockets) s.destroy()
      sockets.clear()
      server.close(() => resolve())
    })
  return { listen, cut, connections: () => connections }
}

const range = (from, n) => Array.from({ length: n }, (_, k) => from + k)

module.exports = { URL, RUN, ensureRabbit, deleteQueues, deleteQueueNow, queueDepth, spawnPeer, cuttableProxy, range }
