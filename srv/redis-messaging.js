'use strict'
const NativeMessagingService = require('./NativeMessagingService')
const { number, bool, str, appId } = require('../lib/options')
const { NativeMessagingError, codes } = require('../lib/errors')

const DEFAULT_URL = 'redis://127.0.0.1:6379'

/**
 * `native-redis-messaging`: Redis pub/sub wire-compatible with @sap/cds `redis-messaging`
 * (`mode: 'pubsub'`, the default, at-most-once), or an at-least-once queue on Redis Streams
 * (`mode: 'streams'`). Credentials are read like @sap/cds reads them: `credentials.uri`, a
 * `redis-cache` service binding, or host/port/password.
 */
class NativeRedisMessaging extends NativeMessagingService {
  static optionKeys = {
    url: true,
    host: true,
    port: true,
    password: true,
    tls: true,
    ca: true,
    mode: true,
    connectTimeout: true,
    reconnectDelay: true,
    maxReconnectDelay: true,
    streamPrefix: true,
    queue: { name: true },
    consumer: true,
    maxLen: true,
    claimAfter: true,
    readCount: true,
    block: true,
    deadLetterStream: true,
    fromStart: true
  }

  engineOptions(o, warn) {
    const { url, ca } = connection(o, warn)
    const mode = str('mode', o.mode)
    const redis = {
      url,
      ca,
      mode,
      connectTimeout: number('connectTimeout', o.connectTimeout),
      reconnectDelay: number('reconnectDelay', o.reconnectDelay),
      maxReconnectDelay: number('maxReconnectDelay', o.maxReconnectDelay)
    }
    if (mode === 'streams') {
      Object.assign(redis, {
        streamPrefix: str('streamPrefix', o.streamPrefix),
        group: queueName(o),
        consumer: str('consumer', o.consumer, { nonEmpty: true }),
        maxLen: number('maxLen', o.maxLen),
        claimAfter: number('claimAfter', o.claimAfter),
        readCount: number('readCount', o.readCount),
        block: number('block', o.block),
        deadLetterStream: str('deadLetterStream', o.deadLetterStream, { nonEmpty: true }),
        fromStart: bool('fromStart', o.fromStart)
      })
    }
    return { transport: 'redis', redis }
  }

  /** The @sap/cds `redis-messaging` wire format: headers at the top level next to `data`. */
  serialize(msg) {
    return JSON.stringify({ data: msg.data, ...(msg.headers || {}) })
  }

  /** As @sap/cds: a payload with a `data` property is unwrapped (the rest are headers), anything else is `data`. */
  deserialize(topic, json) {
    if (json !== null && typeof json === 'object' && 'data' in json) {
      const { data, ...headers } = json
      return { event: topic, data, headers }
    }
    return { event: topic, data: json, headers: {} }
  }
}

/** URL and CA from `credentials.uri`/`url`, `credentials.{hostname|host, port, password, tls}`, or top-level `url`/`host`/`port`/`password`. */
function connection(o, warn) {
  const c = o.credentials || {}
  let url
  if (c.uri || c.url) {
    // As @sap/cds: drop the user name of the binding's URI (BTP's Redis authenticates by password only).
    url = withoutUser(String(c.uri || c.url))
  } else if (o.url) {
    url = String(o.url)
  } else {
    const host = c.hostname || c.host || o.host
    if (host) {
      const port = c.port ?? o.port ?? 6379
      const password = c.password ?? o.password
      const tls = c.tls === true || (c.tls && typeof c.tls === 'object') || o.tls === true
      const h = String(host).includes(':') ? `[${host}]` : host
      url = `${tls ? 'rediss' : 'redis'}://${password ? `:${encodeURIComponent(password)}@` : ''}${h}:${port}`
    }
  }
  if (!url) {
    warn?.(`No Redis credentials found, using ${DEFAULT_URL}`)
    url = DEFAULT_URL
  }
  const ca = (c.tls && typeof c.tls === 'object' && c.tls.server_ca) || o.ca || undefined
  if (ca != null && typeof ca !== 'string')
    throw new NativeMessagingError(codes.INVALID_CONFIG, 'the CA certificate (credentials.tls.server_ca / ca) must be PEM text')
  // As @sap/cds 10: a server CA in the binding means TLS.
  if (ca && /^redis:\/\//i.test(url)) url = 'rediss://' + url.slice('redis://'.length)
  return { url, ca }
}

function withoutUser(uri) {
  try {
    const u = new URL(uri)
    if (!u.username) return uri
    u.username = ''
    return u.toString()
  } catch {
    return uri // the engine reports INVALID_CONFIG without repeating the URI
  }
}

/** The consumer group: `queue.name` or `queue`, with `$appId` replaced; default: the app's `$appId`. */
function queueName(o) {
  const q = o.queue && typeof o.queue === 'object' ? o.queue.name : o.queue
  if (q != null && (typeof q !== 'string' || !q.trim()))
    throw new NativeMessagingError(codes.INVALID_CONFIG, `queue.name must be a non-empty string, got ${JSON.stringify(q)}`)
  return (q ?? '$appId').replace(/\$appId/g, () => appId({ packageFallback: true }))
}

module.exports = NativeRedisMessaging
module.exports.connection = connection
module.exports.queueName = queueName
