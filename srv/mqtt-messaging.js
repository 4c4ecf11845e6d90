'use strict'
const fs = require('node:fs')
const path = require('node:path')
const cds = require('@sap/cds')
const NativeMessagingService = require('./NativeMessagingService')
const { number, bool } = NativeMessagingService
const { NativeMessagingError, codes } = require('../lib/errors')

/**
 * `native-mqtt-messaging`: MQTT 3.1.1 brokers (Mosquitto, SAP Event Mesh, …) over mqtt://, mqtts://,
 * ws:// and wss://. QoS 1 (default) is at-least-once: emits resolve on PUBACK; inbound messages are
 * acknowledged only after every handler succeeded, on a persistent session named after the queue.
 *
 * Wire format as @sap/cds's broker kinds: `JSON.stringify({ ...headers, data })`; inbound, a payload
 * with a `data` property is split into data and headers, any other JSON payload is the data.
 */
class NativeMqttMessaging extends NativeMessagingService {
  engineOptions(o) {
    const c = o.credentials || {}
    const binding = eventMeshBinding(c)
    const url = o.url ?? c.url ?? c.uri ?? binding?.uri ?? 'mqtt://localhost:1883'
    if (typeof url !== 'string' || !url.trim()) throw invalid(`url must be the broker URL, e.g. "mqtt://localhost:1883", got ${JSON.stringify(url)}`)
    const queue = queueName(o, this.name)
    const clientId = string('clientId', o.clientId) ?? queue.replace(/[^A-Za-z0-9_.-]+/g, '-')
    const qos = number('qos', o.qos)
    if (qos !== undefined && qos !== 0 && qos !== 1) throw invalid(`qos must be 0 or 1, got ${JSON.stringify(o.qos)} (MQTT QoS 2 is not supported)`)
    const sep = o.topicSeparator ?? '.'
    if (sep !== '.' && sep !== '/') throw invalid(`topicSeparator must be '.' (event names are topics) or '/' (dots become slashes), got ${JSON.stringify(sep)}`)
    let wsUrl = url
    const wsPath = string('path', o.path)
    if (wsPath) {
      if (!/^wss?:\/\//i.test(url)) throw invalid('path is the WebSocket path; use it with a ws:// or wss:// url')
      wsUrl = url.replace(/^(wss?:\/\/[^/?#]*)[^?#]*/i, (_, base) => base + (wsPath.startsWith('/') ? wsPath : '/' + wsPath))
    }
    return {
      transport: 'mqtt',
      mqtt: {
        url: wsUrl,
        username: string('username', o.username ?? c.username ?? c.user),
        password: string('password', o.password ?? c.password),
        clientId,
        keepAlive: number('keepAlive', o.keepAlive),
        qos,
        ca: pem('ca', o.ca ?? c.ca),
        rejectUnauthorized: bool('rejectUnauthorized', o.rejectUnauthorized),
        cert: pem('cert', o.cert ?? c.cert),
        key: pem('key', o.key ?? c.key),
        token: string('token', o.token ?? c.token ?? binding?.token),
        sharedGroup: string('sharedGroup', o.sharedGroup),
        deadLetterTopic: string('deadLetterTopic', o.deadLetterTopic),
        publishTimeout: number('publishTimeout', o.publishTimeout),
        reconnectDelay: number('reconnectDelay', o.reconnectDelay),
        maxReconnectDelay: number('maxReconnectDelay', o.maxReconnectDelay)
      }
    }
  }

  /** CAP event names may contain dots; with `topicSeparator: '/'` they become topic levels. */
  prepareTopic(topic, inbound) {
    const mapped = this.options?.topicSeparator === '/' ? String(topic).replace(/\./g, '/') : topic
    return super.prepareTopic(mapped, inbound)
  }

  /** The subscribed filter (with `+` / `#`) that an inbound topic matched, so it finds its `on()` handler. */
  wildcarded(topic) {
    for (const filter of this.subscribedTopics.keys()) if (/[+#]/.test(filter) && matches(topic, filter)) return filter
  }

  serialize(msg) {
    return JSON.stringify({ ...msg.headers, data: msg.data })
  }

  deserialize(topic, json) {
    if (json !== null && typeof json === 'object' && !Array.isArray(json) && 'data' in json) {
      const { data, ...headers } = json
      return { event: topic, data, headers }
    }
    return { event: topic, data: json, headers: {} }
  }
}

/** MQTT topic-filter matching (`+` one level, `#` the rest; `$` topics only match `$` filters). */
function matches(topic, filter) {
  if (topic.startsWith('$') && !filter.startsWith('$')) return false
  const t = topic.split('/')
  const f = filter.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length) return false
    if (f[i] !== '+' && f[i] !== t[i]) return false
  }
  return t.length === f.length
}

/** The queue name: `queue` / `queue.name`, else `<app name>/<service name>`. */
function queueName(o, serviceName) {
  const q = typeof o.queue === 'string' ? o.queue : o.queue?.name
  if (q != null) {
    if (typeof q !== 'string' || !q.trim()) throw invalid(`queue must be a non-empty name, got ${JSON.stringify(q)}`)
    return q
  }
  return `${appName()}/${serviceName}`
}

function appName() {
  try {
    return JSON.parse(fs.readFileSync(path.join(cds.root, 'package.json'), 'utf8')).name || 'cap-app'
  } catch {
    return 'cap-app'
  }
}

/** SAP Event Mesh binding: the entry of `credentials.messaging` for MQTT 3.1.1 over WebSocket. */
function eventMeshBinding(c) {
  if (!Array.isArray(c.messaging)) return undefined
  const m = c.messaging.find(e => [].concat(e?.protocol ?? []).some(p => /mqtt/i.test(p)))
  return m && { uri: m.uri, token: m.token ?? m.oa2?.token }
}

function string(name, v) {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') throw invalid(`${name} must be a string, got ${JSON.stringify(v)}`)
  return v
}

/** PEM content, or the path of a PEM file. */
function pem(name, v) {
  const s = string(name, v)
  if (s === undefined || s.includes('-----BEGIN')) return s
  try {
    return fs.readFileSync(path.resolve(cds.root, s), 'utf8')
  } catch (e) {
    throw new NativeMessagingError(codes.INVALID_CONFIG, `${name} must be PEM text or the path of a PEM file; cannot read ${s}: ${e.message}`, { cause: e })
  }
}

const invalid = message => new NativeMessagingError(codes.INVALID_CONFIG, message)

module.exports = NativeMqttMessaging
module.exports.matches = matches
