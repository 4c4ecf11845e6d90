'use strict'
const NativeAmqpMessaging = require('./amqp-messaging')
const { number, str } = require('../lib/options')
const { NativeMessagingError, codes } = require('../lib/errors')
const { mountWebhook, appUrl, WEBHOOK_PATH } = require('../lib/event-mesh-webhook')
const { registerTenantHooks, deployForProvider } = require('../lib/event-mesh-tenants')

const HUB_BASE = '/hub/rest/api/v1/management/messaging'

/**
 * `native-enterprise-messaging` and `native-event-mesh`: SAP Event Mesh over HTTP REST, like @sap/cds's
 * `enterprise-messaging` / `event-mesh`. Emits are REST publishes (`POST …/topics/{topic}/messages`);
 * inbound messages come by webhook mounted on `cds.app` (the same path as @sap/cds), or — beyond
 * @sap/cds — by pulling the queue (`webhook: false` or `inbound: 'pull'`). Topics, headers, the
 * queue name and the body bytes are those of @sap/cds (inherited from the AMQP kind's `event-mesh`
 * profile); everything that talks HTTP runs in the native engine.
 */
class NativeEnterpriseMessaging extends NativeAmqpMessaging {
  /** The AMQP kind's options plus the REST kind's; `webhook` is taken as it is (it forms the registration body). */
  static optionKeys = {
    ...NativeAmqpMessaging.optionKeys,
    managementBasePath: true,
    queue: { ...NativeAmqpMessaging.optionKeys.queue, deadMsgQueue: true, maxRedeliveryCount: true },
    inbound: true,
    pull: { interval: true },
    webhook: true,
    requestTimeout: true,
    maxRetries: true,
    deployForProvider: true
  }

  get namespace() {
    return this.options.credentials?.namespace ?? this.options.namespace ?? ''
  }

  /** With multitenancy: a subscriber tenant's queue, subscriptions and webhook follow its subscription (lib/event-mesh-tenants.js). */
  async init() {
    await super.init()
    registerTenantHooks(this, () => this._tenantSpec)
  }

  /** Event Mesh topics match subscriptions with `+/+/+/` for the namespace, as in @sap/cds. */
  wildcarded(topic) {
    return topic.replace(/.*?\/.*?\/.*?\//, '+/+/+/')
  }

  /** `'webhook'` (default, as @sap/cds) or `'pull'`. */
  get inbound() {
    const o = this.options
    if (o.inbound != null) {
      if (o.inbound !== 'webhook' && o.inbound !== 'pull')
        throw new NativeMessagingError(codes.INVALID_CONFIG, `inbound must be 'webhook' or 'pull', got ${JSON.stringify(o.inbound)}`)
      return o.inbound
    }
    return o.webhook === false || o.webhook === 'false' ? 'pull' : 'webhook'
  }

  engineOptions(o) {
    const creds = o.credentials || {}
    const rest = restEntry(creds)
    const mgmt = Array.isArray(creds.management) ? creds.management[0] : creds.management
    if (!mgmt || typeof mgmt.uri !== 'string')
      throw new NativeMessagingError(codes.INVALID_CONFIG, 'the Event Mesh binding has no management entry (credentials.management[0].uri); bind the service instance again or check default-env.json')
    const queueOpts = typeof o.queue === 'string' ? { name: o.queue } : o.queue || {}
    const { name, ...queueConfig } = queueOpts
    if (typeof queueConfig.deadMsgQueue === 'string') queueConfig.deadMsgQueue = queueConfig.deadMsgQueue.replace(/\$namespace/g, this.namespace)
    const queue = this.queueName(name ?? (this.namespace ? '$namespace/$appId' : '$appId'), 'event-mesh')
    this._emQueue = queue
    const inbound = this.inbound
    const webhook = typeof o.webhook === 'object' && o.webhook ? o.webhook : {}
    const { waitingPeriod, ...webhookOptions } = webhook
    const oa2 = oauth(rest.oa2, 'the httprest entry', creds.uaa)
    const mOa2 = oauth(mgmt.oa2, 'the management entry', creds.uaa)
    const managementBasePath = str('managementBasePath', o.managementBasePath) ?? HUB_BASE
    const queueConfigJson = Object.keys(queueConfig).length ? JSON.stringify(queueConfig) : undefined
    this._tenantSpec = {
      eventMesh: {
        managementUri: mgmt.uri,
        managementOauth: { oa2: mgmt.oa2, uaa: creds.uaa, source: 'credentials.management[0].oa2' },
        managementBasePath,
        queueConfig: queueConfigJson
      },
      queue,
      xsappname: creds.xsappname
    }
    const out = {
      transport: 'rest',
      rest: {
        uri: rest.uri,
        ...oa2,
        qos: number('qos', o.qos),
        requestTimeout: number('requestTimeout', o.requestTimeout),
        managementUri: mgmt.uri,
        managementBasePath,
        managementTokenEndpoint: mOa2.tokenEndpoint,
        managementClientId: mOa2.clientId,
        managementClientSecret: mOa2.clientSecret,
        queue,
        queueConfig: queueConfigJson,
        inbound,
        pullInterval: number('pull.interval', o.pull?.interval),
        maxRetries: number('maxRetries', o.maxRetries),
        deployForProvider: deployForProvider(o)
      }
    }
    const url = inbound === 'webhook' && appUrl()
    if (url) {
      out.rest.webhookWaitingPeriod = number('webhook.waitingPeriod', waitingPeriod) ?? 5000
      // The registration body of @sap/cds; the webhook itself is mounted at 'listening'.
      out.rest.webhook = JSON.stringify({
        name: queue,
        address: `queue:${queue}`,
        qos: 1,
        ...webhookOptions,
        pushConfig: {
          type: 'webhook',
          endpoint: `${url.replace(/\/$/, '')}${WEBHOOK_PATH}?q=${queue}`,
          exemptHandshake: false,
          defaultContentType: 'application/json',
          securitySchema: creds.uaa?.certificate
            ? { type: 'oauth2-x509', clientId: oa2.clientId, certificate: creds.uaa.certificate, key: creds.uaa.key, tokenUrl: oa2.tokenEndpoint }
            : { type: 'oauth2', grantType: 'client_credentials', clientId: oa2.clientId, clientSecret: oa2.clientSecret, tokenUrl: oa2.tokenEndpoint },
          ...webhookOptions.pushConfig
        }
      })
      // A subscriber tenant's webhook: the same body, registered with the tenant's httprest token.
      this._tenantSpec.webhook = { uri: rest.uri, oauth: { oa2: rest.oa2, uaa: creds.uaa, source: 'the httprest entry oa2' }, registration: out.rest.webhook }
    }
    return out
  }

  /** Mounts the webhook endpoint, then starts the engine (provisioning, webhook registration or pulling). */
  async startListening() {
    if (this._native?.listening || this._native?.closed) return
    const subscribed = this.subscribedTopics.size > 0 || this._listenToAll.value
    if (subscribed && this.inbound === 'webhook') {
      if (!appUrl())
        this.LOG.error(
          `${this.name}: no URL of this app for the webhook (set cds.env.app.url or VCAP_APPLICATION.application_uris); ` +
            `nothing is received. For local runs without a public URL use inbound: 'pull'.`
        )
      else mountWebhook(this._emQueue, (topic, body, context) => this._onPush(topic, body, context), this.LOG)
    }
    return super.startListening()
  }

  /** A webhook push: resolves `true` when every handler succeeded (→ 200), `false` otherwise (→ 500). */
  async _onPush(topic, body, { tenant }) {
    let json = body
    if (typeof body === 'string') {
      try {
        json = JSON.parse(body)
      } catch {
        json = body
      }
    }
    const msg = this.deserialize(topic, json)
    if (tenant) msg.tenant = tenant
    try {
      await this.processInboundMsg({ tenant }, msg)
      return true
    } catch (e) {
      const f = await this._failure(e || new Error('handler rejected without an error'), msg, 1, false)
      if (f === null) return true
      this.LOG.error(`${this.name}: a handler failed for a message on topic '${topic}' (Event Mesh will push it again):`, e)
      return false
    }
  }
}

/** The first `messaging[]` entry whose protocol includes `httprest`, as @sap/cds picks it. */
function restEntry(creds) {
  const entry = Array.isArray(creds.messaging) ? creds.messaging.find(e => [].concat(e?.protocol || []).includes('httprest')) : undefined
  if (!entry || typeof entry.uri !== 'string')
    throw new NativeMessagingError(
      codes.INVALID_CONFIG,
      'no httprest credentials found: bind the app to an Event Mesh instance (label enterprise-messaging or event-mesh-message-client), or put its service key into credentials'
    )
  return entry
}

/** `oa2` with both spellings (client|clientid, secret|clientsecret, endpoint|tokenendpoint); mTLS from `uaa`. */
function oauth(oa2, where, uaa) {
  const o = oa2 || {}
  const clientId = o.clientid ?? o.client
  let tokenEndpoint = o.tokenendpoint ?? o.endpoint
  const clientSecret = o.clientsecret ?? o.secret
  if (uaa?.certificate && uaa.certurl) tokenEndpoint = `${String(uaa.certurl).replace(/\/$/, '')}/oauth/token`
  if (typeof clientId !== 'string' || typeof tokenEndpoint !== 'string')
    throw new NativeMessagingError(codes.INVALID_CONFIG, `${where} of the Event Mesh binding has no oa2.clientid / oa2.tokenendpoint`)
  const out = { clientId, tokenEndpoint, clientSecret: typeof clientSecret === 'string' ? clientSecret : undefined }
  if (uaa?.certificate) {
    out.certificate = uaa.certificate
    out.key = uaa.key
  }
  return out
}

module.exports = NativeEnterpriseMessaging
