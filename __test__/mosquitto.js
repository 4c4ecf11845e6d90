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
 * Returns { port, wsPort, stop(), start(), log() }; `stop(signal = 'SIGKILL')` stops it by PID (SIGTERM:
 * gracefully, saving its persistence file), `start()` starts it again on the same ports.
 */
async function startMosquitto({ websockets = false, tls, extra = [] } = {}) {
  const bin = mosquittoBinary()
  const dir = tmpDir('mosquitto')
  const port = await freePort()
  const wsPort = websockets ? await freePort() : undefined
  const tlsPort = tls ? await freePort() : undefined
  const wssPort = tls ? await freePort() : undefined
  const conf = path.join(dir, 'mosquitto.conf')
  const lines = ['per_listener_settings false', 'allow_anonymous true', 'persistence false', 'log_dest stdout', 'log_type error', 'log_type warning', 'log_type notice', `listener ${port} 127.0.0.1`]
  if (websockets) lines.push(`listener ${wsPort} 127.0.0.1`, 'protocol websockets')
  if (tls) {
    const files = [`certfile ${tls.cert}`, `keyfile ${tls.key}`]
    lines.push(`listener ${tlsPort} 127.0.0.1`, ...files, `listener ${wssPort} 127.0.0.1`, 'protocol websockets', ...files)
  }
  fs.writeFileSync(conf, [...lines, ...extra, ''].join('\n'))
  const logFile = path.join(dir, 'mosquitto.log')
  let child
  const broker = {
    port,
    wsPort,
    tlsPort,
    wssPort,
    dir,
    async start() {
      const out = fs.openSync(logFile, 'a')
      child = spawn(bin, ['-c', conf], { stdio: ['ignore', out, out] })
      fs.closeSync(out)
      const me = child
      const up = async p => !p || (await listening(p))
      await until(async () => me.exitCode !== null || ((await up(port)) && (await up(wsPort)) && (await up(tlsPort)) && (await up(wssPort))), 10000, `mosquitto on ${port}`)
      if (me.exitCode !== null) throw new Error(`mosquitto exited with ${me.exitCode}:\n${broker.log()}`)
    },
    async stop(signal = 'SIGKILL') {
      const me = child
      if (!me || me.exitCode !== null) return
      const gone = new Promise(r => me.once('exit', r))
      process.kill(me.pid, signal)
      await gone
      await until(async () => !(await listening(port)), 5000, `mosquitto on ${port} to stop`)
    },
    log: () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '')
  }
  await broker.start()
  return broker
}

/**
 * A throw-away CA and a server certificate for 127.0.0.1 / localhost, made with the openssl CLI.
 * Returns the paths { ca, cert, key } (readable by the broker after it dropped privileges).
 */
function makeCertificates() {
  const dir = tmpDir('certs')
  const f = name => path.join(dir, name)
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  ssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=cds-native-messaging test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
  ssl('req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=127.0.0.1')
  fs.writeFileSync(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n')
  ssl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '2', '-extfile', f('ext.cnf'))
  for (const n of fs.readdirSync(dir)) fs.chmodSync(f(n), 0o644)
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') }
}

module.exports = { startMosquitto, makeCertificates }
