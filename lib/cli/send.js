'use strict'
// `cds-native-messaging send <topic> [json] -H k=v`: emits one message through the app's configured
// messaging service (same kind, options, wire format and topic preparation as the app).
const { NativeMessagingError, codes } = require('../errors')
const { loadApp, one } = require('./app')
const out = require('./output')

async function send(topic, json, opts) {
  const app = loadApp({ profile: opts.profile })
  const s = one(app, opts.service)
  let data
  if (json !== undefined) {
    try {
      data = JSON.parse(json)
    } catch (e) {
      throw new NativeMessagingError(codes.INVALID_DATA_FORMAT, `the message is not JSON (${e.message}); quote it, e.g. '{"ID":1}'`)
    }
  }
  const headers = {}
  for (const h of opts.header || []) {
    const i = h.indexOf('=')
    if (i < 1) throw new NativeMessagingError(codes.INVALID_CONFIG, `a header must be k=v, got '${h}'`)
    headers[h.slice(0, i)] = h.slice(i + 1)
  }
  const { cds } = app
  let srv = await cds.connect.to(s.name)
  if (typeof cds.unboxed === 'function') srv = cds.unboxed(srv)
  try {
    await srv.emit(topic, data, headers)
  } finally {
    await srv.disconnect?.()
  }
  if (opts.json) out.json({ service: s.name, topic, sent: 1 })
  else out.line(`sent 1 message to '${topic}' through ${s.name} (${s.conf.kind})`)
  return 0
}

module.exports = { send }
