'use strict'
// Raw node-redis (v4) pub/sub, with the @sap/cds wire format ({data, ...headers}).
const { createClient } = require('redis')

module.exports = async ({ url }) => {
  const pub = createClient({ url })
  await pub.connect()
  const sub = pub.duplicate()
  await sub.connect()
  const handlers = new Map()
  return {
    emit: (topic, data) => pub.publish(topic, JSON.stringify({ data })),
    on: (topic, fn) => handlers.set(topic, fn),
    listen: async () => {
      for (const [topic, fn] of handlers) await sub.subscribe(topic, m => fn(JSON.parse(m).data))
    },
    close: async () => {
      await sub.quit()
      await pub.quit()
    }
  }
}
