'use strict'
// Raw mqtt.js: QoS 1 publish (resolves on PUBACK) and subscribe, payload {...headers, data}.
const mqtt = require('mqtt')

module.exports = async ({ url, qos = 1 }) => {
  const client = await mqtt.connectAsync(url, { clientId: `bench-raw-${process.pid}-${Date.now()}`, clean: true })
  const handlers = new Map()
  client.on('message', (topic, payload) => {
    const fn = handlers.get(topic)
    if (fn) fn(JSON.parse(payload).data)
  })
  return {
    emit: (topic, data) => client.publishAsync(topic, JSON.stringify({ data }), { qos }),
    on: (topic, fn) => handlers.set(topic, fn),
    listen: async () => {
      for (const topic of handlers.keys()) await client.subscribeAsync(topic, { qos })
    },
    close: () => client.endAsync()
  }
}
