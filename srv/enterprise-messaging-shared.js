'use strict'
const NativeAmqpMessaging = require('./amqp-messaging')
const { NativeMessagingError, codes } = require('../lib/errors')
const { registerTenantHooks, deployForProvider } = require('../lib/event-mesh-tenants')

/**
 * `native-enterprise-messaging-shared` and `native-event-mesh-shared`: SAP Event Mesh over AMQP 1.0
 * on WebSocket (`amqp10ws`), with the binding and options of @sap/cds `enterprise-messaging-shared`
 * / `event-mesh-shared`: the first `messaging[]` entry with protocol `amqp10ws` (its `oa2` token on
 * every upgrade), `management[0]` for the queue and its subscriptions, `namespace`, `uaa` for
 * mutual TLS; `queue.name` default `$namespace/$appId`, the other `queue` keys form the queue's
 * configuration; the `event-mesh` profile (`topic:<t>` through an anonymous sender, `queue:<q>`).
 */
class NativeEventMeshShared extends NativeAmqpMessaging {
  /** The AMQP kind's options plus Event Mesh's (`queue` keys other than `name` form the queue's configuration). */
  static optionKeys = {
    ...NativeAmqpMessaging.optionKeys,
    managementBasePath: true,
    queue: { ...NativeAmqpMessaging.optionKeys.queue, deadMsgQueue: true, maxRedeliveryCount: true },
    deployForProvider: true
  }

  async init() {
    if (this.options.profile === undefined) this.options.profile = 'event-mesh'
    await super.init()
    // With multitenancy: a subscriber tenant's queue and subscriptions follow its subscription.
    registerTenantHooks(this, () => this._tenantSpec)
  }

  engineOptions(o) {
    const creds = o.credentials || {}
    const messaging = Array.isArray(creds.messaging) ? creds.messaging : []
    const index = messaging.findIndex(m => [].concat(m?.protocol ?? []).includes('amqp10ws'))
    const entry = messaging[index]
    if (!entry?.uri)
      throw new NativeMessagingError(
        codes.INVALID_CONFIG,
        'No amqp10ws credentials found: the Event Mesh binding needs a credentials.messaging[] entry with protocol "amqp10ws" and a uri (bind an Event Mesh instance, e.g. cds bind, or give credentials)'
      )
    const { name, ...queueConfig } = o.queue && typeof o.queue === 'object' ? o.queue : { name: o.queue }
    const ns = creds.namespace
    if (typeof queueConfig.deadMsgQueue === 'string') queueConfig.deadMsgQueue = queueConfig.deadMsgQueue.replace(/\$namespace/g, ns ?? '')
    const management = Array.isArray(creds.management) ? creds.management[0] : undefined
    const uaa = creds.uaa
    // Mutual TLS (uaa.certificate/uaa.key): the client certificate is presented on the wss://
    // connection too, as @sap/cds does; the kind's own tls.cert/tls.key win.
    const mtls = uaa?.certificate && uaa?.key && /^wss:/i.test(entry.uri) ? { cert: uaa.certificate, key: uaa.key } : undefined
    const base = super.engineOptions({
      ...o,
      // (also here, not only in init: the CLI maps the options without initialising the service)
      profile: o.profile ?? 'event-mesh',
      ...(mtls ? { tls: { ...mtls, ...o.tls } } : {}),
      url: entry.uri,
      queue: { name: name ?? (ns ? '$namespace/$appId' : '$appId') },
      credentials: { namespace: ns },
      oauth: undefined
    })
    base.eventMesh = {
      oauth: entry.oa2 && { oa2: entry.oa2, uaa, source: `credentials.messaging[${index}].oa2` },
      managementUri: management?.uri,
      managementOauth: management?.oa2 && { oa2: management.oa2, uaa, source: 'credentials.management[0].oa2' },
      managementBasePath: o.managementBasePath,
      queueConfig: Object.keys(queueConfig).length ? JSON.stringify(queueConfig) : undefined,
      deployForProvider: deployForProvider(o)
    }
    if (base.eventMesh.managementUri && base.eventMesh.managementOauth)
      this._tenantSpec = {
        eventMesh: { ...base.eventMesh, oauth: undefined, deployForProvider: undefined },
        queue: base.amqp.queue,
        xsappname: creds.xsappname
      }
    return base
  }
}

module.exports = NativeEventMeshShared
