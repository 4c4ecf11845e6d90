'use strict'
// A CAP server for the Event Mesh tests, run as a child process (`cds-serve`), configured by
// CDS_CONFIG (requires.messaging: ours or @sap/cds's kind) and PEER_TOPICS (JSON list to subscribe).
//   POST /test/emit {event, data, headers} → 200 {} or 500 {code, message, unrecoverable, retryAfter}
//   GET  /test/received                    → what the handlers got: [{event, data, headers, tenant}]
// A message with data.failTimes = n makes the handler throw on its first n deliveries.
const cds = require('@sap/cds')

const received = []
const failures = new Map()
let messaging

cds.on('bootstrap', app => {
  app.post('/test/emit', (req, res) => {
    const chunks = []
    req.on('data', c => chunks.push(c))
    req.on('end', async () => {
      const { event, data, headers } = JSON.parse(Buffer.concat(chunks).toString() || '{}')
      try {
        await messaging.emit(event, data, headers)
        res.json({})
      } catch (e) {
        res.status(500).json({ code: e.code, message: e.message, unrecoverable: !!e.unrecoverable, retryAfter: e.retryAfter, statusCode: e.statusCode })
      }
    })
  })
  app.get('/test/received', (_req, res) => res.json(received))
})

cds.once('served', async () => {
  messaging = await cds.connect.to('messaging')
  for (const topic of JSON.parse(process.env.PEER_TOPICS || '[]'))
    messaging.on(topic, msg => {
      const key = JSON.stringify(msg.data)
      const n = (failures.get(key) || 0) + 1
      failures.set(key, n)
      if (msg.data && n <= msg.data.failTimes) throw new Error(`failing on purpose (${n}/${msg.data.failTimes})`)
      received.push({ event: msg.event, data: msg.data, headers: msg.headers, tenant: msg.tenant ?? cds.context?.tenant })
    })
})

cds.once('listening', ({ server }) => console.log(`PEER READY ${server.address().port}`))

module.exports = cds.server
