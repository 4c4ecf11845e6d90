'use strict'
const fs = require('node:fs')
const path = require('node:path')
const cds = require('@sap/cds')
const NativeMessagingService = require('./NativeMessagingService')
const { number, bool } = NativeMessagingService
const { NativeMessagingError, codes } = require('../lib/errors')

const DEFAULT_URL = 'redis://127.0.0.1:6379'

/**
 * `native-redis-messaging`: Redis pub/sub wire-compatible with @sap/cds `redis-messaging`
 * (`mode: 'pubsub'`, the default, at-most-once), or an at-least-once queue on Redis Streams
 * (`mode: 'streams'`). Credentials are read like @sap/cds reads them: `credentials.uri`, a
 * `redis-cache` service binding, or host/port/password.
 */
class NativeRedisMessaging extends NativeMessagingService {
  engineOptions(o) {
    const { url, ca } = connection(o, this.LOG)
    const mode = o.mode ?? 'pubsub'
    if (mode !== 'pubsub' && mode !== 'streams')
      throw new NativeMessagingError(codes.INVALID_CONFIG, `mode must be 'pubsub' or 'streams', got ${JSON.stringify(mode)}`)
    const out = {
      transport: 'redis',
      url,
      ca,
      mode,
      connectTimeout: number('connectTimeout', o.connectTimeout),
      reconnectDelay: number('reconnectDelay', o.reconnectDelay),
      maxReconnectDelay: number('maxReconnectDelay', o.maxReconnectDelay)
    }
    if (mode === 'streams') {
      const prefix = o.streamPrefix ?? 'cds:'
      if (typeof prefix !== 'string')
        throw new NativeMessagingError(codes.INVALID_CONFIG, `streamPrefix must be a string, got ${JSON.stringify(prefix)}`)
      Object.assign(out, {
        streamPrefix: prefix,
        queue: queueName(o),
        consumer: string('consumer', o.consumer),
        maxLen: number('maxLen', o.maxLen),
        claimAfter: number('claimAfter', o.claimAfter),
        readCount: number('readCount', o.readCount),
        block: number('block', o.block),
        deadLetterStream: string('deadLetterStream', o.deadLetterStream),
        fromStart: bool('fromStart', o.fromStart)
      })
    }
    return out
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
function connection(o, LOG) {
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
    LOG?._warn && LOG.warn(`No Redis credentials found, using ${DEFAULT_URL}`)
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
  return (q ?? '$appId').replace(/\$appId/g, appId)
}

/**
 * `<app name>/<first 4 characters of the app id>` as @sap/cds's `$appId`; without app metadata
 * (local runs) the name of the app's package.json stands in for the app name, so that different
 * apps on one Redis do not share a queue.
 */
function appId() {
  let name = cds.env.app?.name
  let id = cds.env.app?.id
  if (!name && process.env.VCAP_APPLICATION) {
    try {
      const v = JSON.parse(process.env.VCAP_APPLICATION)
      name = v.application_name
      id = v.application_id
    } catch {
      /* no metadata */
    }
  }
  if (!name) {
    try {
      name = JSON.parse(fs.readFileSync(path.join(cds.root, 'package.json'), 'utf8')).name
    } catch {
      /* no package.json */
    }
  }
  return `${name || 'CAP'}/${String(id || '00000000').substring(0, 4)}`
}

function string(name, v) {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string' || !v) throw new NativeMessagingError(codes.INVALID_CONFIG, `${name} must be a non-empty string, got ${JSON.stringify(v)}`)
  return v
}

module.exports = NativeRedisMessaging
module.exports.connection = connection
module.exports.queueName = queueName
