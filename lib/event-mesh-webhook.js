'use strict'
// The webhook endpoint of the Event Mesh REST kinds, mounted on `cds.app` at the path @sap/cds uses
// (`/messaging/enterprise-messaging?q=<queue>`), so existing xs-security (`$XSAPPNAME.emcallback`
// granted to Event Mesh) and webhook registrations stay valid.
//
// - OPTIONS: Event Mesh's handshake: `webhook-request-origin` is echoed as `webhook-allowed-origin`.
// - POST: topic from `x-address: topic:<t>`; 200 once every handler succeeded, 500 otherwise (Event
//   Mesh pushes the message again); unknown `q` → 200 and a warning (nobody here consumes that queue).
// - Secured like @sap/cds: with real authentication configured (`cds.requires.auth` other than
//   mocked), CAP's auth middleware runs, anonymous callers get 401, and callers without the scope
//   `emcallback` get 403. The tenant comes from `cds.context`.
const { cds } = require('./cds')

const WEBHOOK_PATH = '/messaging/enterprise-messaging'
const MAX_BODY = 16 * 1024 * 1024

const callbacks = new Map() // queue → (topic, body, { tenant }) => Promise<boolean>
let mounted = null // the express app the endpoint is mounted on

/** The app's public URL: `cds.env.app.url`, else `https://` + `VCAP_APPLICATION.application_uris[0]` (as @sap/cds). */
function appUrl() {
  const app = cds.env.app
  if (app && typeof app.url === 'string' && app.url) return app.url
  try {
    const v = process.env.VCAP_APPLICATION && JSON.parse(process.env.VCAP_APPLICATION)
    const uri = v && Array.isArray(v.application_uris) && v.application_uris[0]
    return uri ? `https://${String(uri).replace(/^https?:\/\//, '')}` : undefined
  } catch {
    return undefined
  }
}

function isSecured() {
  const auth = cds.env.requires.auth
  return !!(auth && (auth.impl || !(auth.kind in { mocked: 1, 'mocked-auth': 1 })))
}

/**
 * Registers the callback of one queue and mounts the endpoint on `cds.app` once.
 * Returns `false` (after logging why) when it cannot be mounted.
 */
function mountWebhook(queue, callback, LOG) {
  const app = cds.app
  if (!app || typeof app.use !== 'function') {
    LOG.error(`no express app (cds.app) to mount the Event Mesh webhook ${WEBHOOK_PATH} on; nothing is received for queue ${queue}. Run the app with \`cds serve\`/\`cds watch\`, or use inbound: 'pull'.`)
    return false
  }
  const secured = isSecured()
  if (!secured && process.env.NODE_ENV === 'production') {
    LOG.error(`the Event Mesh webhook ${WEBHOOK_PATH} would be reachable without authentication in production: not mounted, nothing is received for queue ${queue}. Configure authentication (cds.requires.auth, e.g. xsuaa) so that Event Mesh calls it with the emcallback scope.`)
    return false
  }
  callbacks.set(queue, callback)
  if (mounted === app) return true
  mounted = app
  app.use(WEBHOOK_PATH, cds.middlewares.context())
  if (secured) {
    app.use(WEBHOOK_PATH, cds.middlewares.auth())
    app.use(WEBHOOK_PATH, (_req, res, next) => (cds.context?.user?._is_anonymous ? res.sendStatus(401) : next()))
  }
  const allowed = () => !secured || cds.context?.user?.is?.('emcallback')
  app.options(WEBHOOK_PATH, (req, res) => {
    if (!allowed()) return res.sendStatus(403)
    const origin = req.headers['webhook-request-origin']
    if (origin) res.set('webhook-allowed-origin', origin)
    res.sendStatus(200)
  })
  app.post(WEBHOOK_PATH, (req, res) => {
    if (!allowed()) return res.sendStatus(403)
    const queueName = req.query.q
    if (!queueName) {
      LOG.error(`Event Mesh webhook: query parameter q (the queue) is missing`)
      return res.sendStatus(400)
    }
    const topic = /^topic:(.*)$/.exec(String(req.headers['x-address'] || ''))?.[1]
    if (!topic) {
      LOG.error(`Event Mesh webhook: the message has no topic in header x-address (got ${JSON.stringify(req.headers['x-address'] ?? null)})`)
      return res.sendStatus(400)
    }
    const cb = callbacks.get(String(queueName))
    if (!cb) {
      LOG.warn(`Event Mesh webhook: a message on topic '${topic}' for queue '${queueName}', which no service of this app consumes; acknowledged and dropped`)
      return res.sendStatus(200)
    }
    const tenant = cds.context?.tenant
    readBody(req)
      .then(body => cb(topic, body, { tenant }))
      .then(
        ok => res.sendStatus(ok ? 200 : 500),
        e => {
          LOG.error(`Event Mesh webhook: cannot process a message on topic '${topic}':`, e)
          res.sendStatus(500)
        }
      )
  })
  return true
}

/** The parsed body if a body parser ran before us, else the raw text (parsed by the kind). */
function readBody(req) {
  if (req.body !== undefined && !(typeof req.body === 'object' && req.body !== null && !Object.keys(req.body).length && req.readableEnded)) return Promise.resolve(req.body)
  return new Promise((resolve, reject) => {
    const chunks = []
    let size = 0
    req.on('data', c => {
      size += c.length
      if (size > MAX_BODY) {
        reject(new Error(`the message body is larger than ${MAX_BODY} bytes`))
        req.destroy()
      } else chunks.push(c)
    })
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

module.exports = { WEBHOOK_PATH, appUrl, mountWebhook, readBody }
