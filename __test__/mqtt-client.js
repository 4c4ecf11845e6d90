'use strict'
// A raw MQTT client (the `mqtt` package) for tests: injects foreign payloads, watches topics, and
// removes the persistent sessions a test created on the shared broker.
const mqtt = require('mqtt')

/** Connects a raw client; resolves once connected. */
function rawClient(url, opts = {}) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
    c.once('connect', () => resolve(c))
    c.once('error', e => (c.end(true), reject(e)))
  })
}

/** Subscribes a raw client to `filter` and collects { topic, payload(string), raw(Buffer) }. */
async function watch(url, filter) {
  const c = await rawClient(url, { clientId: `watch-${process.pid}-${Math.random().toString(36).slice(2, 8)}` })
  const got = []
  c.on('message', (topic, raw) => got.push({ topic, raw, payload: raw.toString('utf8') }))
  await c.subscribeAsync(filter, { qos: 1 })
  got.close = () => c.endAsync()
  return got
}

/** Publishes raw bytes or text at QoS 1. */
async function publishRaw(url, topic, payload) {
  const c = await rawClient(url)
  try {
    await c.publishAsync(topic, payload, { qos: 1 })
  } finally {
    await c.endAsync()
  }
}

/** Ends the persistent sessions of these client ids (connect with clean session, disconnect). */
async function purgeSessions(url, clientIds) {
  for (const clientId of clientIds) {
    try {
      const c = await rawClient(url, { clientId, clean: true })
      await c.endAsync()
    } catch {
      /* broker gone: nothing to purge */
    }
  }
}

/** Removes the retained messages under `filter` (dead letters a test left on the shared broker). */
async function clearRetained(url, filter, quietMs = 500) {
  let c
  try {
    c = await rawClient(url)
  } catch {
    return /* broker gone */
  }
  const topics = new Set()
  c.on('message', (topic, payload, packet) => packet.retain && payload.length && topics.add(topic))
  await c.subscribeAsync(filter, { qos: 1 })
  await new Promise(r => setTimeout(r, quietMs))
  for (const t of topics) await c.publishAsync(t, '', { qos: 1, retain: true })
  await c.endAsync()
}

module.exports = { rawClient, watch, publishRaw, purgeSessions, clearRetained }
