'use strict'
// Private Mosquitto instances for tests that need WebSockets, special limits, or a broker they can
// stop: a config file written per instance, a free loopback port, stopped by PID.
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')
const { tmpDir, freePort, until } = require('./helpers')

function mosquittoBinary() {
  for (const p of [process.env.MOSQUITTO, '/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto']) {
    if (p && fs.existsSync(p)) return p
  }
  try {
    return execFileSync('sh', ['-c', 'command -v mosquitto'], { encoding: 'utf8' }).trim()
  } catch {
    throw new Error('mosquitto is not installed; this suite starts private instances of it. Install it with: apt-get install mosquitto')
  }
}

const listening = (port, host = '127.0.0.1') =>
  new Promise(resolve => {
    const s = net.connect({ host, port })
    s.once('connect', () => (s.destroy(), resolve(true)))
    s.once('error', () => resolve(false))
  })

/**
 * Starts a private broker: a TCP listener and, with `websockets: true`, a WebSocket listener, both
 * on 127.0.0.1. `extra` lines are appended to the config (e.g. `max_queued_messages 10000`).
 * Returns { port, wsPort, stop(), start(), log() }; `stop()` kills it by PID, `start()` starts it
 * again on the same ports.
 */
async function startMosquitto({ websockets = false, extra = [] } = {}) {
  const bin = mosquittoBinary()
  const dir = tmpDir('mosquitto')
  const port = await freePort()
  const wsPort = websockets ? await freePort() : undefined
  const conf = path.join(dir, 'mosquitto.conf')
  const lines = ['per_listener_settings false', 'allow_anonymous true', 'persistence false', 'log_dest stdout', 'log_type error', 'log_type warning', 'log_type notice', `listener ${port} 127.0.0.1`]
  if (websockets) lines.push(`listener ${wsPort} 127.0.0.1`, 'protocol websockets')
  fs.writeFileSync(conf, [...lines, ...extra, ''].join('\n'))
  const logFile = path.join(dir, 'mosquitto.log')
  let child
  const broker = {
    port,
    wsPort,
    dir,
    async start() {
      const out = fs.openSync(logFile, 'a')
      child = spawn(bin, ['-c', conf], { stdio: ['ignore', out, out] })
      fs.closeSync(out)
      const me = child
      await until(async () => me.exitCode !== null || ((await listening(port)) && (!wsPort || (await listening(wsPort)))), 10000, `mosquitto on ${port}`)
      if (me.exitCode !== null) throw new Error(`mosquitto exited with ${me.exitCode}:\n${broker.log()}`)
    },
    async stop() {
      const me = child
      if (!me || me.exitCode !== null) return
      const gone = new Promise(r => me.once('exit', r))
      process.kill(me.pid, 'SIGKILL')
      await gone
      await until(async () => !(await listening(port)), 5000, `mosquitto on ${port} to stop`)
    },
    log: () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '')
  }
  await broker.start()
  return broker
}

module.exports = { startMosquitto }
