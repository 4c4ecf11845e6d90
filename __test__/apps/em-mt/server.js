'use strict'
// A multitenant CAP server (@sap/cds-mtxs in the app, SQLite tenant databases in memory) for the Event Mesh
// multitenancy suite, run as a child process (`cds-serve`), configured by CDS_CONFIG (requires.messaging: an Event
// Mesh kind) and APP_TOPICS (JSON list to subscribe). Tenants are subscribed and unsubscribed through
// cds.xt.SaasProvisioningService over HTTP, as the SaaS registry does, or:
//   POST /test/unsubscribe {tenant} → cds.xt.DeploymentService.unsubscribe(tenant) without metadata (200 {})
//   POST /test/emit {tenant, event, data} → messaging.emit in a transaction of `tenant` (none: the provider) → 200 {} or 500 {code, message}
//   GET /test/received → [{event, data, tenant}] every message the handlers got, with cds.context.tenant as they saw it
const cds = require('@sap/cds')

let messaging
const received = []
const body = req =>
  new Promise(resolve => {
    const chunks = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString() || '{}')))
  })

cds.on('bootstrap', app => {
  app.get('/test/received', (_req, res) => res.json(received))
  app.post('/test/emit', async (req, res) => {
    const { tenant, event, data } = await body(req)
    try {
      await cds.tx({ tenant, user: new cds.User.Privileged() }, () => messaging.emit(event, data))
      res.json({})
    } catch (e) {
      res.status(500).json({ code: e.code, message: e.message })
    }
  })
  app.post('/test/unsubscribe', (req, res) => {
    const chunks = []
    req.on('data', c => chunks.push(c))
    req.on('end', async () => {
      try {
        const { tenant } = JSON.parse(Buffer.concat(chunks).toString() || '{}')
        const ds = await cds.connect.to('cds.xt.DeploymentService')
        await ds.tx({ user: new cds.User.Privileged() }, tx => tx.unsubscribe(tenant))
        res.json({})
      } catch (e) {
        res.status(500).json({ message: e.message })
      }
    })
  })
})

cds.once('served', async () => {
  messaging = await cds.connect.to('messaging')
  for (const topic of JSON.parse(process.env.APP_TOPICS || '[]')) messaging.on(topic, msg => void received.push({ event: msg.event, data: msg.data, tenant: cds.context?.tenant }))
})

cds.once('listening', ({ server }) => console.log(`MT APP READY ${server.address().port}`))

module.exports = cds.server
