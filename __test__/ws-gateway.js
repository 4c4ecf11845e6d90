'use strict'
// A FAKE token endpoint and a small WebSocket gateway in front of the real RabbitMQ AMQP 1.0
// listener, standing in for SAP Event Mesh's OAuth + WebSocket front (nothing reachable here speaks
// AMQP 1.0 over WebSocket natively). The gateway checks `Authorization: Bearer <token>` against the
// tokens the fake endpoint issued and the subprotocol (`amqp`, or `mqtt` for Mosquitto on 1883), then
// pipes binary frames to the broker's TCP port.
// With `dropOnExpiry`, it closes every socket when its token expires (as a gateway may).
const http = require('node:http')
const https = require('node:https')
const net = require('node:net')
const { WebSocketServer } = require('ws')

/**
 * Starts both on loopback ports. Options: `expiresIn` (s, default 3600), `dropOnExpiry`,
 * `clientId`/`clientSecret` (default cid/secret), `subprotocol` (default amqp), `targetPort` (default 5672),
 * `revokeFirst` (the first n upgrades get 401 and their token is revoked, as if it had been withdrawn),
 * `tls` ({ key, cert }: both servers on https/wss).
 * Returns { tokenUrl, wsUrl, oa2, stats, close() }.
 */
async function startGateway(options = {}) {
  const { expiresIn = 3600, dropOnExpiry = false, clientId = 'cid', clientSecret = 'secret', subprotocol = 'amqp', targetPort = 5672, revokeFirst = 0, tls } = options
  const create = handler => (tls ? https.createServer(tls, handler) : http.createServer(handler))
  const tokens = new Map() // token -> expiry (ms)
  const stats = { tokenRequests: 0, upgrades: 0, refused: 0, revoked: 0, drops: 0, tokensSeen: new Set() }
  let seq = 0
  const basic = 'Basic ' + Buffer.from(`${clientId}:${clientSecret}`).toString('base64')
  const tokenServer = create((req, res) => {
    let body = ''
    req.on('data', d => (body += d))
    req.on('end', () => {
      stats.tokenRequests++
      const form = new URLSearchParams(body)
      const ok = req.headers.authorization === basic || (form.get('client_id') === clientId && form.get('client_secret') === clientSecret)
      if (req.method !== 'POST' || form.get('grant_type') !== 'client_credentials' || !ok) {
        res.writeHead(401, { 'content-type': 'application/json' })
        return res.end(JSON.stringify({ error: 'unauthorized' }))
      }
      const token = `tok-${++seq}-${process.pid}`
      tokens.set(token, Date.now() + expiresIn * 1000)
      res.writeHead(200, { 'content-type': 'application/json;charset=UTF-8' })
      res.end(JSON.stringify({ access_token: token, token_type: 'bearer', expires_in: expiresIn }))
    })
  })
  const wsHttp = create((req, res) => res.writeHead(404).end())
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: protocols => (protocols.has(subprotocol) ? subprotocol : false)
  })
  const sockets = new Set()
  wsHttp.on('upgrade', (req, socket, head) => {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization || '')
    const expiry = m && tokens.get(m[1])
    const protocols = String(req.headers['sec-websocket-protocol'] || '').split(',').map(s => s.trim())
    if (expiry && stats.revoked < revokeFirst) {
      stats.revoked++
      tokens.delete(m[1])
    }
    if (!expiry || expiry <= Date.now() || !tokens.has(m[1]) || !protocols.includes(subprotocol)) {
      stats.refused++
      socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
      return
    }
    stats.tokensSeen.add(m[1])
    wss.handleUpgrade(req, socket, head, ws => {
      stats.upgrades++
      const tcp = net.connect(targetPort, '127.0.0.1')
      sockets.add(ws)
      const end = () => {
        sockets.delete(ws)
        tcp.destroy()
        ws.terminate()
      }
      let timer
      if (dropOnExpiry) {
        timer = setTimeout(() => {
          stats.drops++
          end()
        }, Math.max(0, expiry - Date.now()))
      }
      tcp.on('data', d => ws.readyState === ws.OPEN && ws.send(d, { binary: true }))
      ws.on('message', (d, isBinary) => (isBinary ? tcp.write(d) : end()))
      ws.on('close', () => {
        clearTimeout(timer)
        end()
      })
      ws.on('error', end)
      tcp.on('error', end)
      tcp.on('close', end)
    })
  })
  const listen = s => new Promise(resolve => s.listen(0, '127.0.0.1', () => resolve(s.address().port)))
  const [tp, wp] = [await listen(tokenServer), await listen(wsHttp)]
  const host = tls ? 'localhost' : '127.0.0.1'
  const tokenUrl = `${tls ? 'https' : 'http'}://${host}:${tp}/oauth/token`
  return {
    tokenUrl,
    wsUrl: `${tls ? 'wss' : 'ws'}://${host}:${wp}/protocols/${subprotocol === 'amqp' ? 'amqp10ws' : 'mqtt311ws'}`,
    oa2: { clientid: clientId, clientsecret: clientSecret, tokenendpoint: tokenUrl, granttype: 'client_credentials' },
    stats,
    close: async () => {
      for (const ws of sockets) ws.terminate()
      await Promise.all([tokenServer, wsHttp].map(s => new Promise(r => (s.closeAllConnections?.(), s.close(() => r())))))
    }
  }
}

module.exports = { startGateway }
