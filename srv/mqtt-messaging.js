'use strict'
const NativeMessagingService = require('./NativeMessagingService')
const { number, bool, str, pem, packageName } = require('../lib/options')
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
  static optionKeys = {
    url: true,
    path: true,
    username: true,
    password: true,
    clientId: true,
    keepAlive: true,
    qos: true,
    ca: true,
    rejectUnauthorized: true,
    cert: true,
    key: true,
    token: true,
    sharedGroup: true,
    deadLetterTopic: true,
    deadLetterRetain: true,
    watchBrokerDrops: true,
    publishTimeout: true,
    reconnectDelay: true,
    maxReconnectDelay: true,
    topicSeparator: true,
    queue: { name: true }
  }

  engineOptions(o) {
    const c = o.credentials || {}
    const binding = eventMeshBinding(c)
    const url = o.url ?? c.url ?? c.uri ?? binding?.uri ?? 'mqtt://localhost:1883'
    if (typeof url !== 'string' || !url.trim()) throw invalid(`url must be the broker URL, e.g. "mqtt://localhost:1883", got ${JSON.stringify(url)}`)
    const queue = queueName(o, this.name)
    const clientId = str('clientId', o.clientId) ?? queue.replace(/[^A-Za-z0-9_.-]+/g, '-')
    const sep = o.topicSeparator ?? '.'
    if (sep !== '.' && sep !== '/') throw invalid(`topicSeparator must be '.' (event names are topics) or '/' (dots become slashes), got ${JSON.stringify(sep)}`)
    let wsUrl = url
    const wsPath = str('path', o.path)
    if (wsPath) {
      if (!/^wss?:\/\//i.test(url)) throw invalid('path is the WebSocket path; use it with a ws:// or wss:// url')
      wsUrl = url.replace(/^(wss?:\/\/[^/?#]*)[^?#]*/i, (_, base) => base + (wsPath.startsWith('/') ? wsPath : '/' + wsPath))
    }
    return {
      transport: 'mqtt',
      mqtt: {
        url: wsUrl,
        username: str('username', o.username ?? c.username ?? c.user),
        password: str('password', o.password ?? c.password),
        clientId,
        keepAlive: number('keepAlive', o.keepAlive),
        qos: number('qos', o.qos),
        ca: pem('ca', o.ca ?? c.ca),
        rejectUnauthorized: bool('rejectUnauthorized', o.rejectUnauthorized),
        cert: pem('cert', o.cert ?? c.cert),
        key: pem('key', o.key ?? c.key),
        token: str('token', o.token ?? c.token ?? binding?.token),
        sharedGroup: str('sharedGroup', o.sharedGroup),
        deadLetterTopic: str('deadLetterTopic', o.deadLetterTopic),
        // SAP Event Mesh does not keep retained messages: there dead letters stay as before (not retained)
        deadLetterRetain: bool('deadLetterRetain', o.deadLetterRetain) ?? (binding ? false : undefined),
        // Mosquitto's $SYS count of dropped messages; SAP Event Mesh has no $SYS topics
        watchBrokerDrops: bool('watchBrokerDrops', o.watchBrokerDrops) ?? (binding ? false : undefined),
        publishTimeout: number('publishTimeout', o.publishTimeout),
        reconnectDelay: number('reconnectDelay', o.reconnectDelay),
        maxReconnectDelay: number('maxReconnectDelay', o.maxReconnectDelay)
      },
      // OAuth2 client credentials (`oauth`, or the Event Mesh entry's oa2): a fresh bearer on every WebSocket upgrade.
      eventMesh: (o.oauth ?? binding?.oa2) && { oauth: { oa2: o.oauth ?? binding.oa2, uaa: c.uaa, source: o.oauth ? 'oauth' : 'credentials.messaging[].oa2' } }
    }
  }

  /** CAP event names may contain dots; with `topicSeparator: '/'` they become topic levels. */
  prepareTopic(topic, inbound) {
    const mapped = this.options?.topicSeparator === '/' ? String(topic).replace(/\./g, '/') : topic
    return super.prepareTopic(mapped, inbound)
  }

  /** The subscribed filter (with `+` / `#`) an inbound topic was delivered for (named by the engine), so it finds its `on()` handler. */
  wildcarded(topic) {
    return this._native.matched.get(topic)
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
  return packageName() || 'cap-app'
}

/** SAP Event Mesh binding: the entry of `credentials.messaging` for MQTT 3.1.1 over WebSocket. */
function eventMeshBinding(c) {
  if (!Array.isArray(c.messaging)) return undefined
  const m = c.messaging.find(e => [].concat(e?.protocol ?? []).some(p => /mqtt/i.test(p)))
  const oa2 = m?.oa2 && (m.oa2.clientid ?? m.oa2.client) ? m.oa2 : undefined
  return m && { uri: m.uri, token: m.token ?? m.oa2?.token, oa2 }
}

const invalid = message => new NativeMessagingError(codes.INVALID_CONFIG, message)

module.exports = NativeMqttMessaging
