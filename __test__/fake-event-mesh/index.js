'use strict'
// A FAKE SAP Event Mesh for the tests (nothing reachable here is the real one): OAuth2 token endpoint,
// management API, REST messaging (publish, consume, acknowledge), webhook subscriptions that push to
// the app with the OPTIONS handshake, and AMQP 1.0 over WebSocket — all on one loopback HTTP server
// (and optionally HTTPS on 127.0.0.1:443 with a throw-away CA, for runs of @sap/cds itself, which
// sends management and REST calls to https on port 443 whatever the binding's URL says).
//
//   const fake = await startFakeEventMesh({ expiresIn: 3600 })
//   fake.binding({ namespace: 'my/ns/1' })   // the service binding's credentials
//   fake.requests                            // every HTTP request, for assertions
//   fake.fail({ method: 'POST', path: /\/topics\//, status: 429, retryAfter: 2 })
//   startFakeEventMesh({ mtls: { ca } }) + fake.mtlsBinding({ certificate, key })   // mutual TLS (client certificates of `ca`)
//   startFakeEventMesh({ authHost: 'provider.auth.fake-em.test', subdomains: ['t1-sub'] })   // multitenancy: the
//     binding's token URL uses authHost; `t1-sub.auth.fake-em.test` issues tokens of subscriber t1-sub, whose
//     management calls go to t1-sub's own queues (fake.tenantBroker('t1-sub')); fake.resolve is the
//     CDS_NATIVE_RESOLVE value that maps every one of these names to 127.0.0.1; REST calls with a subscriber's
//     token (publish, webhook subscriptions) go to its instance too (fake.tenantWebhooks('t1-sub'))
//   await fake.close()
const http = require('node:http')
const https = require('node:https')
const { WebSocketServer } = require('ws')
const { Broker, topicMatches } = require('./broker')
const { amqpFrontEnd } = require('./amqp')
const { throwAwayCa } = require('./tls')

const DEFAULT_CLIENTS = { 'em-client': 'em-secret' }
const HUB_BASE = '/hub/rest/api/v1/management/messaging'

/**
 * @param {object} [o]
 * @param {Record<string,string>} [o.clients] client id → secret accepted by the token endpoint
 * @param {number} [o.expiresIn] `expires_in` of issued tokens (s)
 * @param {string} [o.managementBasePath] base path of the management API
 * @param {string} [o.wsPath] WebSocket path of AMQP 1.0
 * @param {boolean} [o.dropOnExpiry] close a WebSocket when the token it was opened with expires
 * @param {boolean} [o.https443] also serve HTTPS on 127.0.0.1:443 (one suite at a time)
 * @param {number} [o.ackTimeout] REST consumption with QoS 1: ms until an unacknowledged message comes back
 * @param {number} [o.redeliveryDelay] webhook: ms before a push that failed is made again
 * @param {(url:string)=>string} [o.webhookUrl] rewrites a registered webhook endpoint (e.g. https://host → http://127.0.0.1:port)
 * @param {string|((w:object)=>string)} [o.pushAuthorization] `Authorization` header of webhook pushes, or a function of the
 *   webhook subscription (`w.tokenSubdomain`: the subscriber whose token URL its securitySchema names); default: a token
 *   of the subscription's client from that token URL
 * @param {string} [o.authHost] host name of the token URL in `binding()` (first label: the provider's subdomain); needs
 *   `fake.resolve` in CDS_NATIVE_RESOLVE, as nothing resolves it
 * @param {string[]} [o.subdomains] subscriber subdomains whose token URL (`<subdomain>.<rest of authHost>`) issues tokens;
 *   another subdomain gets 401
 * @param {{ca:string}} [o.mtls] also serve HTTPS on a free port that requires a client certificate signed by `ca` (PEM) on
 *   every connection (token, management, REST, WebSocket); its token endpoint accepts a client whose certificate's common
 *   name is the client id, without a secret (as XSUAA's cert URL does)
 */
async function startFakeEventMesh(o = {}) {
  const clients = o.clients || DEFAULT_CLIENTS
  const base = o.managementBasePath || HUB_BASE
  const wsPath = o.wsPath || '/protocols/amqp10ws'
  const broker = new Broker()
  const requests = []
  const events = []
  const tokens = new Map() // token → { client, expiresAt, zid, subdomain }
  const authHost = o.authHost ? String(o.authHost).toLowerCase() : undefined
  const authDomain = authHost && authHost.split('.').slice(1).join('.')
  const subdomains = new Set(o.subdomains || [])
  const tenantBrokers = new Map() // subscriber subdomain → its own queues (its own Event Mesh instance)
  const rules = []
  const webhooks = new Map() // name → subscription (the provider's)
  const tenantWebhooks = new Map() // subscriber subdomain → its webhook subscriptions (name → subscription)
  const timers = new Set()
  let tokenSeq = 0
  const log = e => events.push({ t: Date.now(), ...e })
  const amqp = amqpFrontEnd(broker, log)
  const fake = {
    broker,
    requests,
    events,
    tokens,
    webhooks,
    amqp,
    managementBasePath: base,
    /** 'ok' | '401' | '503' | 'destroy' (socket closed without an answer) */
    tokenMode: 'ok',
    expiresIn: o.expiresIn ?? 3600,
    dropOnExpiry: !!o.dropOnExpiry,
    ackTimeout: o.ackTimeout ?? 30000,
    redeliveryDelay: o.redeliveryDelay ?? 200,
    webhookUrl: o.webhookUrl || (u => u),
    pushAuthorization: o.pushAuthorization,
    closedSockets: 0,
    subdomains
  }

  /** The queues of subscriber `subdomain` (its own Event Mesh instance); the provider's are `fake.broker`. */
  fake.tenantBroker = sub => {
    if (!tenantBrokers.has(sub)) tenantBrokers.set(sub, new Broker())
    return tenantBrokers.get(sub)
  }
  const brokerOf = who => (who && who.subdomain ? fake.tenantBroker(who.subdomain) : broker)
  /** The webhook subscriptions of subscriber `subdomain`; the provider's are `fake.webhooks`. */
  fake.tenantWebhooks = sub => {
    if (!tenantWebhooks.has(sub)) tenantWebhooks.set(sub, new Map())
    return tenantWebhooks.get(sub)
  }
  const webhooksOf = who => (who && who.subdomain ? fake.tenantWebhooks(who.subdomain) : webhooks)

  /** Whose token endpoint a request reached: `{ subdomain }` of a subscriber, `{}` for the provider, undefined for an unknown subdomain. */
  const tokenTenant = req => hostTenant(req.headers.host)
  const hostTenant = hostHeader => {
    if (!authHost) return {}
    const host = String(hostHeader || '').replace(/:\d+$/, '').toLowerCase()
    if (host === authHost || host === '127.0.0.1' || host === 'localhost') return {}
    const [first, ...rest] = host.split('.')
    if (rest.join('.') === authDomain && subdomains.has(first)) return { subdomain: first }
    return undefined
  }

  const later = (ms, fn) => {
    const t = setTimeout(() => {
      timers.delete(t)
      fn()
    }, ms)
    timers.add(t)
    return t
  }

  /** Injects a failure: the next `times` requests matching method and path get `status` (or a dropped socket). */
  fake.fail = rule => {
    const r = { times: 1, hits: 0, ...rule }
    rules.push(r)
    return r
  }
  fake.clearFailures = () => (rules.length = 0)

  const issue = (client, zid, subdomain) => {
    const token = `tok-${++tokenSeq}-${client}${subdomain ? `-${subdomain}` : ''}`
    tokens.set(token, { client, zid, subdomain, expiresAt: Date.now() + fake.expiresIn * 1000 })
    return token
  }
  fake.issueToken = issue

  const bearer = req => {
    const m = /^Bearer (.+)$/i.exec(req.headers.authorization || '')
    const t = m && tokens.get(m[1])
    return t && t.expiresAt > Date.now() ? { token: m[1], ...t } : undefined
  }

  // ------------------------------------------------------------------ HTTP dispatch
  const handler = (req, res) => {
    const chunks = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks)
      const url = new URL(req.url, 'http://x')
      const entry = {
        t: Date.now(),
        method: req.method,
        path: url.pathname,
        rawPath: req.url.split('?')[0],
        query: Object.fromEntries(url.searchParams),
        headers: { ...req.headers },
        body: raw.toString('utf8'),
        tls: !!req.socket.encrypted
      }
      const peerCert = req.socket.encrypted && req.socket.authorized ? req.socket.getPeerCertificate() : undefined
      if (peerCert && peerCert.subject) entry.clientCert = peerCert.subject.CN // mutual TLS: who presented a certificate
      requests.push(entry)
      const send = (status, body, headers = {}) => {
        entry.status = status
        const payload = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body)
        if (body !== undefined && typeof body !== 'string' && !headers['content-type']) headers['content-type'] = 'application/json'
        res.writeHead(status, headers)
        res.end(payload)
      }
      const rule = rules.find(r => r.hits < r.times && (!r.method || r.method === req.method) && (typeof r.path === 'string' ? entry.path.includes(r.path) : r.path.test(entry.path)))
      if (rule) {
        rule.hits++
        if (rule.destroy) {
          entry.status = 'destroyed'
          req.socket.destroy()
          return
        }
        const h = {}
        if (rule.retryAfter !== undefined) h['retry-after'] = String(rule.retryAfter)
        return send(rule.status, rule.body ?? { error: { code: String(rule.status), message: `injected ${rule.status}` } }, h)
      }
      try {
        route(req, entry, raw, send)
      } catch (e) {
        send(500, { error: { message: String(e && e.message) } })
      }
    })
  }

  const route = (req, entry, raw, send) => {
    const p = entry.path
    if (p === '/oauth/token') return tokenEndpoint(req, entry, raw, send)
    if (p.startsWith(base + '/') || p === base) {
      const who = bearer(req)
      if (!who) return send(401, { error: { message: 'invalid or expired token' } })
      entry.subdomain = who.subdomain // a subscriber tenant's call (its token came from its subdomain)
      return management(req, entry, raw, send, p.slice(base.length), brokerOf(who))
    }
    if (p.startsWith('/messagingrest/v1/')) {
      const who = bearer(req)
      if (!who) return send(401, { error: { message: 'invalid or expired token' } })
      entry.subdomain = who.subdomain
      return rest(req, entry, raw, send, p.slice('/messagingrest/v1'.length), who)
    }
    send(404, { error: { message: `no route ${req.method} ${p}` } })
  }

  // ------------------------------------------------------------------ token endpoint
  const tokenEndpoint = (req, entry, raw, send) => {
    if (fake.tokenMode === 'destroy') {
      entry.status = 'destroyed'
      return req.socket.destroy()
    }
    if (fake.tokenMode === '503') return send(503, { error: 'temporarily_unavailable' })
    let params = entry.query
    if (req.method === 'POST') params = { ...params, ...Object.fromEntries(new URLSearchParams(raw.toString('utf8'))) }
    else if (req.method !== 'GET') return send(405, { error: 'method not allowed' })
    let client = params.client_id
    let secret = params.client_secret
    const basic = /^Basic (.+)$/i.exec(req.headers.authorization || '')
    if (basic) {
      const [c, ...s] = Buffer.from(basic[1], 'base64').toString('utf8').split(':')
      client = decodeURIComponent(c)
      secret = decodeURIComponent(s.join(':'))
    }
    entry.client = client
    if (params.grant_type !== 'client_credentials') return send(400, { error: 'unsupported_grant_type' })
    // Mutual TLS: the client certificate (verified by the TLS server) authenticates the client id.
    const peer = req.socket.encrypted && req.socket.authorized ? req.socket.getPeerCertificate() : undefined
    const certified = !!(peer && peer.subject && client && peer.subject.CN === client && client in clients && !basic && secret === undefined)
    if (fake.tokenMode === '401' || !client || (!certified && clients[client] !== secret)) return send(401, { error: 'unauthorized', error_description: 'Bad credentials' })
    const tenant = tokenTenant(req)
    if (!tenant) return send(401, { error: 'unauthorized', error_description: `no subscriber with the subdomain of ${req.headers.host}` })
    entry.subdomain = tenant.subdomain
    const zid = req.headers['x-zid']
    send(200, { access_token: issue(client, zid, tenant.subdomain), token_type: 'bearer', expires_in: fake.expiresIn, scope: 'uaa.resource' })
  }

  // ------------------------------------------------------------------ management API
  const management = (req, entry, raw, send, rel, broker) => {
    if (rel === '/readinessCheck' && req.method === 'GET') return send(200, { isReady: true })
    const m = /^\/queues\/([^/]+)(?:\/subscriptions(?:\/([^/]+))?)?$/.exec(entry.rawPath.slice(base.length))
    if (!m) return send(404, { error: { message: `unknown management path ${rel}` } })
    const qname = decodeURIComponent(m[1])
    const isSubs = /\/subscriptions/.test(rel)
    const topic = m[2] && decodeURIComponent(m[2])
    const q = broker.queue(qname)
    if (!isSubs) {
      if (req.method === 'PUT') {
        let config = {}
        try {
          config = raw.length ? JSON.parse(raw.toString('utf8')) : {}
        } catch {
          return send(400, { error: { message: 'queue body must be JSON' } })
        }
        const created = broker.putQueue(qname, config)
        return send(created ? 201 : 200, queueInfo(broker.queue(qname)))
      }
      if (req.method === 'GET') return q ? send(200, queueInfo(q)) : send(404, { error: { message: `queue ${qname} not found` } })
      if (req.method === 'DELETE') return broker.deleteQueue(qname) ? send(204) : send(404, { error: { message: `queue ${qname} not found` } })
      return send(405, { error: { message: 'method not allowed' } })
    }
    if (!q) return send(404, { error: { message: `queue ${qname} not found` } })
    if (!topic) {
      if (req.method !== 'GET') return send(405, { error: { message: 'method not allowed' } })
      // content-type exactly application/json: @sap/cds parses the body only then
      return send(200, [...q.subscriptions].map(t => ({ queueName: qname, topicPattern: t })), { 'content-type': 'application/json' })
    }
    if (req.method === 'PUT') {
      const created = !q.subscriptions.has(topic)
      q.subscriptions.add(topic)
      return send(created ? 201 : 200, { queueName: qname, topicPattern: topic })
    }
    if (req.method === 'GET') return q.subscriptions.has(topic) ? send(200, { queueName: qname, topicPattern: topic }) : send(404, { error: { message: 'not found' } })
    if (req.method === 'DELETE') return q.subscriptions.delete(topic) ? send(204) : send(404, { error: { message: 'not found' } })
    send(405, { error: { message: 'method not allowed' } })
  }
  const queueInfo = q => ({ name: q.name, messageCount: q.ready.length, unacknowledgedMessageCount: q.unacked.size, ...q.config })

  // ------------------------------------------------------------------ REST messaging
  const rest = (req, entry, raw, send, rel, who) => {
    const qos = req.headers['x-qos']
    const broker = brokerOf(who)
    const webhooks = webhooksOf(who)
    let m
    if ((m = /^\/topics\/([^/]+)\/messages$/.exec(entry.rawPath.slice('/messagingrest/v1'.length))) && req.method === 'POST') {
      if (qos !== '0' && qos !== '1') return send(400, { error: { message: 'x-qos is invalid' } })
      const topic = decodeURIComponent(m[1])
      entry.topic = topic
      broker.publish(topic, raw, { contentType: req.headers['content-type'], via: 'rest', qos, zid: who.zid })
      return send(204)
    }
    if ((m = /^\/queues\/([^/]+)\/messages$/.exec(entry.rawPath.slice('/messagingrest/v1'.length))) && req.method === 'POST') {
      if (qos !== '0' && qos !== '1') return send(400, { error: { message: 'x-qos is invalid' } })
      return broker.publishToQueue(decodeURIComponent(m[1]), raw, { contentType: req.headers['content-type'] }) ? send(204) : send(404, { error: { message: 'queue not found' } })
    }
    if ((m = /^\/queues\/([^/]+)\/messages\/consumption$/.exec(entry.rawPath.slice('/messagingrest/v1'.length))) && req.method === 'POST') {
      if (qos !== '0' && qos !== '1') return send(400, { error: { message: 'x-qos is invalid' } })
      const q = broker.queue(decodeURIComponent(m[1]))
      if (!q) return send(404, { error: { message: 'queue not found' } })
      const msg = q.take(qos === '1' ? fake.ackTimeout : null)
      if (!msg) return send(204)
      entry.messageId = msg.id
      res200(send, msg, qos)
      return
    }
    if ((m = /^\/queues\/([^/]+)\/messages\/([^/]+)\/acknowledgement$/.exec(entry.rawPath.slice('/messagingrest/v1'.length))) && req.method === 'POST') {
      const q = broker.queue(decodeURIComponent(m[1]))
      if (!q) return send(404, { error: { message: 'queue not found' } })
      return q.ack(decodeURIComponent(m[2])) ? send(200) : send(404, { error: { message: 'message not found or already acknowledged' } })
    }
    if (rel === '/subscriptions' && req.method === 'POST') return createWebhook(raw, send, who, broker, webhooks)
    if (rel === '/subscriptions' && req.method === 'GET') return send(200, [...webhooks.values()].map(publicWebhook))
    if ((m = /^\/subscriptions\/([^/]+)$/.exec(entry.rawPath.slice('/messagingrest/v1'.length)))) {
      const name = decodeURIComponent(m[1])
      const w = webhooks.get(name)
      if (req.method === 'GET') return w ? send(200, publicWebhook(w)) : send(404, { error: { message: 'subscription not found' } })
      if (req.method === 'DELETE') {
        if (!w) return send(404, { error: { message: 'subscription not found' } })
        stopWebhook(w)
        webhooks.delete(name)
        return send(204)
      }
    }
    send(404, { error: { message: `unknown REST path ${req.method} ${rel}` } })
  }
  const res200 = (send, msg, qos) =>
    send(200, msg.body.toString('utf8'), {
      'content-type': msg.contentType || 'application/json',
      'x-message-id': msg.id,
      'x-qos': qos,
      ...(msg.topic ? { 'x-address': `topic:${msg.topic}` } : {})
    })

  // ------------------------------------------------------------------ webhook subscriptions
  const publicWebhook = w => ({ name: w.name, address: w.address, qos: w.qos, pushConfig: { ...w.pushConfig, securitySchema: w.pushConfig.securitySchema && { type: w.pushConfig.securitySchema.type } }, subscriptionState: w.state, handshakeStatus: w.handshake })
  const createWebhook = (raw, send, who, broker, webhooks) => {
    let body
    try {
      body = JSON.parse(raw.toString('utf8'))
    } catch {
      return send(400, { error: { message: 'body must be JSON' } })
    }
    if (!body.name || !body.address || !body.pushConfig || !body.pushConfig.endpoint) return send(400, { error: { message: 'name, address and pushConfig.endpoint are required' } })
    if (webhooks.has(body.name)) return send(409, { error: { code: 'CONFLICT', message: `subscription ${body.name} exists` } })
    const qname = String(body.address).replace(/^queue:/, '')
    if (!broker.queue(qname)) return send(400, { error: { message: `queue ${qname} does not exist` } })
    const w = { name: body.name, address: body.address, qname, qos: body.qos ?? 1, pushConfig: body.pushConfig, body, state: 'handshake-pending', handshake: 'pending', pushes: 0, busy: false }
    w.broker = broker
    w.webhooks = webhooks
    w.subdomain = who.subdomain // whose instance it lives in
    // Whose tokens Event Mesh would push with: the subscriber whose token URL the securitySchema names.
    const tokenUrl = body.pushConfig.securitySchema && body.pushConfig.securitySchema.tokenUrl
    try {
      w.tokenSubdomain = tokenUrl ? (hostTenant(new URL(tokenUrl).host) || {}).subdomain : undefined
    } catch {
      w.tokenSubdomain = undefined
    }
    webhooks.set(w.name, w)
    send(201, publicWebhook(w))
    later(10, () => handshake(w))
  }
  const target = w => new URL(fake.webhookUrl(w.pushConfig.endpoint))
  const pushAuth = w => {
    if (typeof fake.pushAuthorization === 'function') return fake.pushAuthorization(w)
    if (fake.pushAuthorization) return fake.pushAuthorization
    const s = w.pushConfig.securitySchema
    return s && s.clientId ? `Bearer ${issue(s.clientId, undefined, w.tokenSubdomain)}` : undefined
  }
  const call = (w, method, headers, body) =>
    new Promise(resolve => {
      let u
      try {
        u = target(w)
      } catch (e) {
        return resolve({ error: e })
      }
      const lib = u.protocol === 'https:' ? https : http
      const auth = pushAuth(w)
      const req = lib.request(u, { method, headers: { ...headers, ...(auth ? { authorization: auth } : {}) }, timeout: 10000 }, res => {
        const chunks = []
        res.on('data', c => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }))
      })
      req.on('timeout', () => req.destroy(new Error('timeout')))
      req.on('error', error => resolve({ error }))
      if (body) req.write(body)
      req.end()
    })
  const handshake = async w => {
    if (w.pushConfig.exemptHandshake) {
      w.handshake = 'exempted'
      return activate(w)
    }
    const origin = 'fake-event-mesh.localhost'
    const r = await call(w, 'OPTIONS', { 'webhook-request-origin': origin })
    log({ kind: 'webhook-handshake', name: w.name, status: r.status, allowed: r.headers && r.headers['webhook-allowed-origin'], error: r.error && r.error.message })
    if (w.webhooks.get(w.name) !== w) return
    const allowed = r.headers && r.headers['webhook-allowed-origin']
    if (r.status >= 200 && r.status < 300 && (allowed === origin || allowed === '*')) {
      w.handshake = 'accepted'
      return activate(w)
    }
    w.handshake = 'failed'
    w.state = 'paused'
  }
  const activate = w => {
    w.state = 'active'
    const q = w.broker.queue(w.qname)
    if (!q) return
    w.pump = () => pushNext(w)
    q.listeners.add(w.pump)
    w.pump()
  }
  const stopWebhook = w => {
    w.state = 'deleted'
    const q = w.broker.queue(w.qname)
    if (q && w.pump) q.listeners.delete(w.pump)
  }
  const pushNext = async w => {
    if (w.busy || w.state !== 'active') return
    const q = w.broker.queue(w.qname)
    if (!q || !q.ready.length) return
    w.busy = true
    const msg = q.take(null)
    q.unacked.set(msg.id, { message: msg, timer: undefined })
    const r = await call(
      w,
      'POST',
      {
        'content-type': msg.contentType || w.pushConfig.defaultContentType || 'application/json',
        'x-address': msg.topic ? `topic:${msg.topic}` : `queue:${w.qname}`,
        'x-qos': String(w.qos),
        'x-message-id': msg.id
      },
      msg.body
    )
    w.pushes++
    log({ kind: 'webhook-push', name: w.name, topic: msg.topic, id: msg.id, attempt: msg.deliveryCount, status: r.status, error: r.error && r.error.message })
    const ok = r.status >= 200 && r.status < 300
    if (ok || Number(w.qos) === 0) {
      q.ack(msg.id)
      w.busy = false
      setImmediate(() => pushNext(w))
    } else {
      later(fake.redeliveryDelay, () => {
        q.giveBack(msg.id)
        w.busy = false
        pushNext(w)
      })
    }
  }

  // ------------------------------------------------------------------ WebSocket gateway
  const wss = new WebSocketServer({ noServer: true, handleProtocols: protocols => (protocols.has('amqp') ? 'amqp' : false) })
  const sockets = new Set()
  const upgrade = (req, socket, head) => {
    const url = new URL(req.url, 'http://x')
    const who = bearer(req)
    const protocols = String(req.headers['sec-websocket-protocol'] || '')
      .split(',')
      .map(s => s.trim())
    const entry = { t: Date.now(), method: 'UPGRADE', path: url.pathname, headers: { ...req.headers }, tls: !!socket.encrypted }
    const peer = socket.encrypted && socket.authorized ? socket.getPeerCertificate() : undefined
    if (peer && peer.subject) entry.clientCert = peer.subject.CN
    requests.push(entry)
    const refuse = (status, text) => {
      entry.status = status
      socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)
    }
    if (url.pathname !== wsPath) return refuse(404, 'Not Found')
    if (!who) return refuse(401, 'Unauthorized')
    if (!protocols.includes('amqp')) return refuse(400, 'Bad Request')
    entry.status = 101
    wss.handleUpgrade(req, socket, head, ws => {
      sockets.add(ws)
      ws.on('close', () => sockets.delete(ws))
      if (fake.dropOnExpiry) {
        const t = later(Math.max(0, who.expiresAt - Date.now()), () => {
          fake.closedSockets++
          log({ kind: 'ws-dropped-at-expiry', token: who.token })
          ws.terminate()
        })
        ws.on('close', () => clearTimeout(t))
      }
      amqp.accept(ws)
    })
  }
  /** Closes every open WebSocket (a gateway restart). */
  fake.dropSockets = () => {
    for (const ws of sockets) ws.terminate()
  }

  // ------------------------------------------------------------------ listeners
  const server = http.createServer(handler)
  server.on('upgrade', upgrade)
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  fake.port = server.address().port
  fake.url = `http://127.0.0.1:${fake.port}`
  /** CDS_NATIVE_RESOLVE for the token host names of `authHost` and `subdomains` (all on 127.0.0.1). */
  fake.resolve = authHost ? [authHost, ...[...subdomains].map(sub => `${sub}.${authDomain}`)].map(h => `${h}:${fake.port}:127.0.0.1`).join(',') : ''
  let tlsServer
  let ca
  if (o.https443) {
    ca = throwAwayCa()
    tlsServer = https.createServer({ key: ca.key, cert: ca.cert }, handler)
    tlsServer.on('upgrade', upgrade)
    await new Promise((resolve, reject) => {
      tlsServer.once('error', reject)
      tlsServer.listen(443, '127.0.0.1', resolve)
    })
    fake.httpsUrl = 'https://127.0.0.1'
    fake.caFile = ca.caFile
    fake.ca = ca.ca
  }

  let mtlsServer
  let mtlsCa
  if (o.mtls) {
    mtlsCa = throwAwayCa('fake-event-mesh-mtls-server-ca')
    mtlsServer = https.createServer({ key: mtlsCa.key, cert: mtlsCa.cert, ca: o.mtls.ca, requestCert: true, rejectUnauthorized: true }, handler)
    mtlsServer.on('upgrade', upgrade)
    // A client without an acceptable certificate never gets to HTTP: record why.
    mtlsServer.on('tlsClientError', e => log({ kind: 'mtls-refused', error: e.code || e.message }))
    await new Promise((resolve, reject) => {
      mtlsServer.once('error', reject)
      mtlsServer.listen(0, '127.0.0.1', resolve)
    })
    fake.mtlsPort = mtlsServer.address().port
    fake.mtlsUrl = `https://127.0.0.1:${fake.mtlsPort}`
    fake.mtlsCaFile = mtlsCa.caFile
    fake.mtlsCa = mtlsCa.ca
  }

  /**
   * A binding as Event Mesh gives it with mutual TLS (`uaa.certificate`, `uaa.key`, `uaa.certurl`; no client
   * secrets), every URL on the mutual-TLS server. `certificate`/`key` are the client's PEM (omit them for a binding
   * that has none, which then carries the secrets instead).
   */
  fake.mtlsBinding = ({ namespace = 'my/ns/1', client = Object.keys(clients)[0], certificate, key, xsappname = 'fake-em-app' } = {}) => {
    if (!fake.mtlsUrl) throw new Error('start the fake with { mtls: { ca } }')
    const root = fake.mtlsUrl
    const oa2 = { clientid: client, tokenendpoint: `${root}/oauth/token`, granttype: 'client_x509' }
    if (!certificate) oa2.clientsecret = clients[client]
    const ws = `wss://127.0.0.1:${fake.mtlsPort}${wsPath}`
    return {
      namespace,
      xsappname,
      serviceinstanceid: 'fake-instance',
      messaging: [
        { protocol: ['amqp10ws'], broker: { type: 'sapmgw' }, uri: ws, oa2: { ...oa2 } },
        { protocol: ['httprest'], broker: { type: 'saprestmgw' }, uri: root, oa2: { ...oa2 } }
      ],
      management: [{ uri: root, oa2: { ...oa2 } }],
      ...(certificate ? { uaa: { certificate, key, certurl: root, clientid: client } } : {})
    }
  }

  /**
   * The credentials of an Event Mesh service binding pointing at this fake.
   * `https: true` uses https://127.0.0.1 (port 443) for REST, management and tokens, as @sap/cds needs.
   */
  fake.binding = ({ namespace = 'my/ns/1', https: tls = false, client = Object.keys(clients)[0], xsappname = 'fake-em-app' } = {}) => {
    const root = tls ? fake.httpsUrl : fake.url
    const tokenRoot = authHost && !tls ? `http://${authHost}:${fake.port}` : root
    const oa2 = { clientid: client, clientsecret: clients[client], tokenendpoint: `${tokenRoot}/oauth/token`, granttype: 'client_credentials' }
    const ws = tls ? `wss://127.0.0.1${wsPath}` : `ws://127.0.0.1:${fake.port}${wsPath}`
    return {
      namespace,
      xsappname,
      serviceinstanceid: 'fake-instance',
      messaging: [
        { protocol: ['amqp10ws'], broker: { type: 'sapmgw' }, uri: ws, oa2: { ...oa2 } },
        { protocol: ['mqtt311ws'], broker: { type: 'sapmgw' }, uri: ws.replace(wsPath, '/protocols/mqtt311ws'), oa2: { ...oa2 } },
        { protocol: ['httprest'], broker: { type: 'saprestmgw' }, uri: root, oa2: { ...oa2 } }
      ],
      management: [{ uri: root, oa2: { ...oa2 } }]
    }
  }

  /** Requests whose path contains `part` (and, if given, with `method`). */
  fake.requestsTo = (part, method) => requests.filter(r => r.path.includes(part) && (!method || r.method === method))
  fake.topicMatches = topicMatches

  fake.close = async () => {
    for (const t of timers) clearTimeout(t)
    timers.clear()
    for (const map of [webhooks, ...tenantWebhooks.values()]) for (const w of map.values()) stopWebhook(w)
    for (const ws of sockets) ws.terminate()
    wss.close()
    const closeServer = s =>
      new Promise(resolve => {
        s.close(() => resolve())
        s.closeAllConnections?.()
      })
    await closeServer(server)
    if (tlsServer) await closeServer(tlsServer)
    if (mtlsServer) await closeServer(mtlsServer)
    if (ca) ca.remove()
    if (mtlsCa) mtlsCa.remove()
  }
  return fake
}

module.exports = { startFakeEventMesh }
