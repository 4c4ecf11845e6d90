'use strict'
// Raw mqtt.js, QoS 1: publish resolves on PUBACK; payload {...headers, data}.
// `ackAfterHandler` (the fair peer of an at-least-once kind): a persistent session (clean: false,
// stable client id) whose PUBACK is sent only after the handler returned — mqtt.js sends the PUBACK
// of an inbound QoS 1 message when `handleMessage`'s callback is called.
const mqtt = require('mqtt')

module.exports = async ({ url, qos = 1, ackAfterHandler = false, clientId }) => {
  // One id per process: in the two-process layout the producer and the consumer get the same config,
  // and a second connection with the consumer's id would take its session over (MQTT 3.1.1 §3.1.4).
  const id = `${clientId || `bench-raw-${Date.now()}`}-${process.pid}`
  const client = await mqtt.connectAsync(url, { clientId: id, clean: !ackAfterHandler })
  const handlers = new Map()
  const deliver = (topic, payload) => {
    const fn = handlers.get(topic)
    if (fn) fn(JSON.parse(payload).data)
  }
  if (ackAfterHandler) {
    client.handleMessage = (packet, done) => {
      try {
        deliver(packet.topic, packet.payload)
      } finally {
        done()
      }
    }
  } else client.on('message', deliver)
  return {
    emit: (topic, data) => client.publishAsync(topic, JSON.stringify({ data }), { qos }),
    on: (topic, fn) => handlers.set(topic, fn),
    listen: async () => {
      for (const topic of handlers.keys()) await client.subscribeAsync(topic, { qos })
    },
    close: () => client.endAsync()
  }
}
