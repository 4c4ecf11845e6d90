'use strict'
const NativeMessagingService = require('./NativeMessagingService')
const { number, bool, str, pem, appId } = require('../lib/options')
const { NativeMessagingError, codes } = require('../lib/errors')

/**
 * `native-amqp-messaging`: AMQP 1.0 with broker profiles (RabbitMQ 3.x/4.x, SAP Event Mesh, …).
 * Sends the same bytes as @sap/cds `enterprise-messaging-shared`: one Data section holding
 * `JSON.stringify({...headers, data})`.
 */
class NativeAmqpMessaging extends NativeMessagingService {
  static optionKeys = {
    url: true,
    profile: true,
    user: true,
    password: true,
    vhost: true,
    sasl: { mechanism: true },
    tls: { ca: true, cert: true, key: true, rejectUnauthorized: true, servername: true },
    connection: { containerId: true, idleTimeout: true, connectTimeout: true, reconnectDelay: true, maxReconnectDelay: true, dedicated: true },
    containerId: true,
    idleTimeout: true,
    queue: { name: true, provision: true, type: true, deadLetterExchange: true, deadLetterRoutingKey: true, deadLetterQueue: true },
    prefetch: true,
    qos: true,
    sendTimeout: true,
    durable: true,
    exchange: true,
    namespace: true,
    addresses: { publish: true, consume: true, anonymous: true, topicFrom: true, retry: true, deadLetter: true }
  }

  async init() {
    // `format: 'cloudevents'` as with @sap/cds enterprise-messaging(-shared): default prefixes.
    if (this.options.format === 'cloudevents') {
      if (typeof this.options.publishPrefix !== 'string') this.options.publishPrefix = '$namespace/ce/'
      if (typeof this.options.subscribePrefix !== 'string') this.options.subscribePrefix = '+/+/+/ce/'
    }
    return super.init()
  }

  get namespace() {
    return this.options.namespace ?? this.options.credentials?.namespace ?? ''
  }

  /** As @sap/cds with `format: 'cloudevents'`: `.` → `/`, `$namespace` replaced. */
  prepareTopic(topic, inbound) {
    const t = this.options.format === 'cloudevents' ? topic.replace(/\./g, '/') : topic
    return super.prepareTopic(t, inbound).replace(/\$namespace/g, this.namespace)
  }

  /** As @sap/cds with `format: 'cloudevents'`: `source` derived from the publish prefix. */
  prepareHeaders(headers, event) {
    const o = this.options
    if (o.format === 'cloudevents' && !('source' in headers) && typeof o.publishPrefix === 'string')
      headers.source =
        '/' +
        o.publishPrefix
          .replace(/\$namespace/g, this.namespace)
          .replace(/\/ce\/$/, '')
          .replace(/\/$/, '')
          .replace(/\/-$/, '')
    super.prepareHeaders(headers, event)
  }

  /** Event Mesh topics match subscriptions with `+/+/+/` for the namespace, as in @sap/cds. */
  wildcarded(topic) {
    return this.options.profile === 'event-mesh' ? topic.replace(/.*?\/.*?\/.*?\//, '+/+/+/') : topic
  }

  engineOptions(o) {
    const creds = o.credentials || {}
    const url = o.url ?? creds.url ?? creds.uri
    if (typeof url !== 'string' || !url.trim())
      throw new NativeMessagingError(codes.INVALID_CONFIG, 'url must be the broker URL, e.g. "amqp://guest:guest@localhost:5672" (or credentials.url)')
    const profile = str('profile', o.profile)
    const queue = typeof o.queue === 'string' ? { name: o.queue } : o.queue || {}
    const connection = o.connection || {}
    const tls = o.tls || {}
    const addresses = o.addresses || {}
    const sasl = typeof o.sasl === 'string' ? o.sasl : o.sasl?.mechanism
    return {
      transport: 'amqp',
      amqp: {
        url,
        profile,
        user: str('user', o.user ?? creds.user ?? creds.username),
        password: str('password', o.password ?? creds.password),
        vhost: str('vhost', o.vhost ?? creds.vhost),
        sasl: str('sasl', sasl),
        tlsCa: pem('tls.ca', tls.ca ?? creds.ca),
        tlsCert: pem('tls.cert', tls.cert ?? creds.cert),
        tlsKey: pem('tls.key', tls.key ?? creds.key),
        tlsVerify: bool('tls.rejectUnauthorized', tls.rejectUnauthorized),
        tlsServername: str('tls.servername', tls.servername),
        containerId: str('connection.containerId', connection.containerId ?? o.containerId),
        idleTimeout: number('connection.idleTimeout', connection.idleTimeout ?? o.idleTimeout),
        connectTimeout: number('connection.connectTimeout', connection.connectTimeout),
        reconnectDelay: number('connection.reconnectDelay', connection.reconnectDelay),
        maxReconnectDelay: number('connection.maxReconnectDelay', connection.maxReconnectDelay),
        dedicated: bool('connection.dedicated', connection.dedicated),
        queue: this.queueName(queue.name, profile ?? 'rabbitmq'),
        provisionQueue: bool('queue.provision', queue.provision),
        queueType: str('queue.type', queue.type),
        deadLetterExchange: str('queue.deadLetterExchange', queue.deadLetterExchange),
        deadLetterRoutingKey: str('queue.deadLetterRoutingKey', queue.deadLetterRoutingKey),
        deadLetterQueue: str('queue.deadLetterQueue', queue.deadLetterQueue),
        prefetch: number('prefetch', o.prefetch),
        qos: number('qos', o.qos),
        sendTimeout: number('sendTimeout', o.sendTimeout),
        durable: bool('durable', o.durable),
        exchange: str('exchange', o.exchange),
        namespace: str('namespace', o.namespace ?? creds.namespace),
        publishAddress: str('addresses.publish', addresses.publish),
        consumeAddress: str('addresses.consume', addresses.consume),
        anonymousSender: bool('addresses.anonymous', addresses.anonymous),
        topicFrom: str('addresses.topicFrom', addresses.topicFrom),
        retryOutcome: str('addresses.retry', addresses.retry),
        deadLetterOutcome: str('addresses.deadLetter', addresses.deadLetter)
      },
      // ws:// or wss:// through an OAuth-protected gateway: `oauth` (or credentials.oa2) as in an Event Mesh binding.
      eventMesh: o.oauth || creds.oa2 ? { oauth: { oa2: o.oauth ?? creds.oa2, uaa: creds.uaa, source: o.oauth ? 'oauth' : 'credentials.oa2' } } : undefined
    }
  }

  /** The queue name: `queue.name` with `$appId` / `$namespace`, default `$appId` (the package name stands in for a missing app name). */
  queueName(name, profile) {
    const appID = appId({ packageFallback: true })
    const ns = this.namespace
    if (name != null && (typeof name !== 'string' || !name.trim()))
      throw new NativeMessagingError(codes.INVALID_CONFIG, `queue.name must be a non-empty string, got ${JSON.stringify(name)}`)
    const explicit = name != null
    let q = (name ?? '$appId').replace(/\$appId/g, appID).replace(/\$namespace/g, ns)
    // RabbitMQ 3.x addresses (/amq/queue/<q>) cannot hold '/': the derived default uses '.'.
    if (!explicit && profile.startsWith('rabbitmq')) q = q.replace(/\//g, '.')
    return q
  }

  /** The bytes @sap/cds enterprise-messaging-shared sends: headers and data in one object. */
  serialize(msg) {
    return JSON.stringify({ ...msg.headers, data: msg.data })
  }

  /** Unwraps `data` as @sap/cds does: an object with `data` splits into data and headers, anything else is data. */
  deserialize(topic, json) {
    let data = json
    let headers = {}
    if (json && typeof json === 'object' && !Array.isArray(json) && 'data' in json) {
      ;({ data, ...headers } = json)
    }
    return { event: topic || '*', data, headers }
  }

  async handle(msg) {
    try {
      return await super.handle(msg)
    } catch (e) {
      // As @sap/cds: a message the broker will never take stops the outbox from retrying.
      if (!msg.inbound && e && e.code === codes.REJECTED && /amqp:not-allowed/.test(e.message)) e.unrecoverable = true
      throw e
    }
  }
}

module.exports = NativeAmqpMessaging
