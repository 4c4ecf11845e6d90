// A TypeScript consumer of cds-native-messaging: uses every exported type. Checked with
// `tsc --noEmit --strict -p __test__/types` in `npm test` (scripts/test.sh); never run.
import cds from '@sap/cds'
import {
  codes,
  NativeMessagingError,
  NativeMessagingErrorCode,
  NativeMessagingOptions,
  NativeLocalMessagingOptions,
  NativeFileBasedMessagingOptions,
  NativeRedisMessagingOptions,
  NativeMqttMessagingOptions,
  NativeAmqpMessagingOptions,
  NativeCompositeMessagingOptions,
  NativeEnterpriseMessagingSharedOptions,
  NativeEnterpriseMessagingOptions,
  EventMeshCredentials,
  NativeMessagingService,
  NativeLocalMessaging,
  NativeFileBasedMessaging,
  NativeRedisMessaging,
  NativeMqttMessaging,
  NativeAmqpMessaging,
  NativeCompositeMessaging,
  NativeEnterpriseMessagingShared,
  NativeEnterpriseMessaging,
  DeadLetter,
  MessagingStats,
  FailureDecision,
  FailureHook,
  BatchMessage,
  BatchHandler,
  OutboundMessage,
  EmitResult,
  FailureInfo
} from 'cds-native-messaging'

const code: NativeMessagingErrorCode = codes.INVALID_CONFIG
const err = new NativeMessagingError(code, 'bad option', { cause: new Error('x') })
const isClosed: boolean = err.code === codes.CLOSED

const common: NativeMessagingOptions = { kind: 'native-local-messaging', maxAttempts: 5, retryDelay: 100, maxRetryDelay: 1000, maxInFlight: 10, maxBatch: 10, handlerTimeout: 30000, forceListening: true, publishPrefix: 'p/', subscribePrefix: 's/', format: 'cloudevents', structured: true }
const local: NativeLocalMessagingOptions = { ...common, kind: 'native-local-messaging' }
const file: NativeFileBasedMessagingOptions = { kind: 'native-file-based-messaging', file: '~/.cds-msg-box', deadLetterFile: '/tmp/d', malformedFile: '/tmp/m', watch: true, interval: 1000, lockTimeout: 5000, staleLockAfter: 10000, fsync: true }
const redis: NativeRedisMessagingOptions = {
  kind: 'native-redis-messaging',
  mode: 'streams',
  credentials: { uri: 'redis://127.0.0.1:6379', password: 'secret', tls: { server_ca: '-----BEGIN CERTIFICATE-----' } },
  connectTimeout: 5000,
  streamPrefix: 'cds:',
  queue: { name: '$appId' },
  consumer: 'c1',
  maxLen: 1000,
  claimAfter: 30000,
  readCount: 100,
  block: 1000,
  deadLetterStream: 'dead',
  fromStart: false
}
const mqtt: NativeMqttMessagingOptions = {
  kind: 'native-mqtt-messaging',
  url: 'mqtts://broker:8883',
  credentials: { username: 'u', password: 'p', ca: 'ca.pem' },
  qos: 1,
  topicSeparator: '/',
  queue: 'orders',
  sharedGroup: 'g',
  publishTimeout: 3000
}
const amqp: NativeAmqpMessagingOptions = {
  kind: 'native-amqp-messaging',
  profile: 'rabbitmq4',
  credentials: { url: 'amqp://localhost:5672', user: 'guest', password: 'guest' },
  sasl: { mechanism: 'PLAIN' },
  tls: { rejectUnauthorized: true },
  connection: { dedicated: true, idleTimeout: 0 },
  queue: { name: 'q', provision: true, type: 'quorum' },
  qos: 0,
  addresses: { publish: 'topic://{topic}', consume: 'queue://{queue}', topicFrom: 'subject', retry: 'released', deadLetter: 'rejected' }
}
const binding: EventMeshCredentials = {
  namespace: 'my/ns/1',
  messaging: [{ protocol: ['amqp10ws'], uri: 'wss://gw/protocols/amqp10ws', oa2: { clientid: 'c', clientsecret: 's', tokenendpoint: 'https://t/oauth/token' } }],
  management: [{ uri: 'https://m', oa2: { client: 'c', secret: 's', endpoint: 'https://t/oauth/token' } }],
  uaa: { certificate: 'PEM', key: 'PEM', certurl: 'https://cert' }
}
const emShared: NativeEnterpriseMessagingSharedOptions = {
  kind: 'native-event-mesh-shared',
  credentials: binding,
  queue: { name: '$namespace/q', deadMsgQueue: '$namespace/dlq', maxRedeliveryCount: 5 },
  managementBasePath: '/sap-event-mesh/rest/api/v1',
  connection: { reconnectDelay: 100 },
  format: 'cloudevents'
}
const emRest: NativeEnterpriseMessagingOptions = {
  kind: 'native-enterprise-messaging',
  credentials: binding,
  queue: 'q',
  qos: 1,
  webhook: { waitingPeriod: 1000 },
  inbound: 'pull',
  pull: { interval: 500 },
  maxRetries: 3
}
const viaGateway: NativeAmqpMessagingOptions = { kind: 'native-amqp-messaging', url: 'ws://127.0.0.1:1/amqp', oauth: { clientid: 'c', clientsecret: 's', tokenendpoint: 'http://t' } }
const composite: NativeCompositeMessagingOptions = { kind: 'native-composite-messaging', routes: { 'messaging-box': ['orders/**'], other: [{ event: 'a.*' }] }, unmatched: 'drop' }

const hook: FailureHook = async (e, msg, info: FailureInfo): Promise<FailureDecision> => {
  if (e.code === codes.INVALID_DATA_FORMAT) return 'dead-letter'
  return info.attempt < info.maxAttempts && msg.event !== 'never' ? 'retry' : 'ack'
}

async function use(): Promise<void> {
  const srv = (await cds.connect.to('messaging')) as NativeMessagingService
  srv.onFailure(hook).onFailure(() => undefined)
  await srv.startListening()
  const letters: DeadLetter[] = srv.deadLetters()
  const first: string | undefined = letters[0]?.topic
  const stats: MessagingStats = srv.stats()
  const handled: number = stats.acked + stats.redelivered + stats.deadLettered + stats.inFlight
  const lastError: string | undefined = stats.lastError?.message
  const onOrders: BatchHandler<{ id: number }> = async msgs => {
    const sum: number = msgs.reduce((n, m: BatchMessage<{ id: number }>) => n + m.data.id, 0)
    const first: string = msgs[0].event
    void [sum, first]
  }
  srv.onBatch('orders.created', onOrders).onBatch(['a', 'b'], msgs => void msgs.length)
  const outbound: OutboundMessage[] = [{ event: 'orders.created', data: { id: 1 } }, { event: 'x', headers: { 'x-correlation-id': 'c' } }]
  const results: EmitResult[] = await srv.emitMany(outbound)
  const failed: unknown[] = results.flatMap(r => (r.status === 'rejected' ? [r.reason] : []))
  void failed
  await srv.disconnect()
  const services: NativeMessagingService[] = [
    new NativeLocalMessaging('a'),
    new NativeFileBasedMessaging('b'),
    new NativeRedisMessaging('c'),
    new NativeMqttMessaging('d'),
    new NativeAmqpMessaging('e'),
    new NativeEnterpriseMessagingShared('g'),
    new NativeEnterpriseMessaging('h')
  ]
  const router = new NativeCompositeMessaging('f')
  const targets: string[] = router.route('orders/created')
  const table: Array<{ service: string; patterns: string[] }> = router.routes()
  router.onBatch('orders/created', msgs => void msgs)
  const routed: EmitResult[] = await router.emitMany([{ event: 'orders/created', data: {} }])
  void routed
  void [first, handled, lastError, services, targets, table]
}

void [isClosed, local, file, redis, mqtt, amqp, emShared, emRest, viaGateway, composite, use]
