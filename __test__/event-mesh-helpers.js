'use strict'
// Child CAP servers (__test__/apps/em-peer) for the Event Mesh suites, driven over HTTP.
const { spawn } = require('node:child_process')
const path = require('node:path')
const { freePort, until } = require('./helpers')

const APP = path.join(__dirname, 'apps', 'em-peer')

/**
 * Starts a peer with `requires.messaging = messaging`, subscribed to `topics`. `app` goes to
 * cds.env.app (name, id, url); the url defaults to http://127.0.0.1:<port>. `requires` adds other
 * cds.requires entries (e.g. auth).
 */
async function startPeer({ messaging, requires = {}, topics = [], app = {}, env = {}, name = 'peer' }) {
  const port = await freePort()
  const config = { app: { name: 'emapp', id: 'abcdef12-3456-7890', url: `http://127.0.0.1:${port}`, ...app }, requires: { ...requires, messaging } }
  const child = spawn(process.execPath, [require.resolve('@sap/cds/bin/serve.js'), '--port', String(port)], {
    cwd: APP,
    env: { ...process.env, NODE_ENV: 'test', CDS_CONFIG: JSON.stringify(config), PEER_TOPICS: JSON.stringify(topics), ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const peer = { name, port, url: `http://127.0.0.1:${port}`, child, out: '', exited: null }
  child.stdout.on('data', d => (peer.out += d))
  child.stderr.on('data', d => (peer.out += d))
  child.on('exit', code => (peer.exited = code ?? 'signal'))
  peer.ready = until(() => peer.out.includes('PEER READY') || peer.exited !== null, 30000, `${name} to listen`).then(() => {
    if (peer.exited !== null) throw new Error(`${name} exited with ${peer.exited}:\n${peer.out}`)
  })
  peer.emit = async (event, data, headers) => {
    const r = await fetch(`${peer.url}/test/emit`, { method: 'POST', body: JSON.stringify({ event, data, headers }) })
    return { status: r.status, ...(await r.json()) }
  }
  peer.received = async () => (await fetch(`${peer.url}/test/received`)).json()
  peer.stop = async () => {
    if (peer.exited !== null) return
    child.kill('SIGTERM')
    await until(() => peer.exited !== null, 10000, `${name} to exit`).catch(() => child.kill('SIGKILL'))
  }
  return peer
}

module.exports = { startPeer }
