'use strict'
// What the benchmark compares, per transport: the messaging config of our kind (`ours`), of
// @sap/cds's own kind for the same backend (`cds`, tuned: outboxed: false; `cds-default` where its
// defaults differ in what they cost) and, where one exists, a raw JS client (`raw`, implemented in
// bench/raw/<driver>.js). Every cell also measures the CAP floor (bench/app/peers/floor.js, run.js adds
// it). `cdsN` caps the message count of @sap/cds's kind where it is too slow for the full count; `procs`
// restricts the process layouts that make sense. A config may carry `$log` (cds log levels for that
// participant; run.js sets `warn` for `messaging` and for the participant's kind, the logger CAP's
// messaging services log through, for every participant but `cds-default`).
// `ours-batched`: our kind through the opt-in batch APIs — the producer's emits of one tick go out in
// one `srv.emitMany`, the consumer registers `srv.onBatch` (bench/worker.js).
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { execSync } = require('node:child_process')
const version = cmd => {
  try {
    return execSync(cmd, { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim().split('\n')[0]
  } catch {
    return 'not found'
  }
}
// The MQTT broker: BENCH_MQTT_URL (e.g. the shared one, mqtt://127.0.0.1:1883), or by default a private
// Mosquitto (same binary, its defaults but `max_queued_messages 0`) on a free loopback port, started once
// per run. With the default limit (1000 per session) Mosquitto confirms and then drops whatever a consumer
// falls behind by; a run that loses messages measures nothing (README: Broker limits).
let privateMosquitto
const mqttUrl = async () => {
  if (process.env.BENCH_MQTT_URL) return process.env.BENCH_MQTT_URL
  privateMosquitto ??= require('../__test__/mosquitto').startMosquitto({ extra: ['max_queued_messages 0'] })
  return `mqtt://127.0.0.1:${(await privateMosquitto).port}`
}
const unique = () => `${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 6)}`

// The FAKE Event Mesh of the tests (__test__/fake-event-mesh: token endpoint, management API, AMQP 1.0
// WebSocket gateway with Event Mesh addressing), started once per run in bench/run.js's process.
let fakeEventMesh
const eventMesh = () => (fakeEventMesh ??= require('../__test__/fake-event-mesh').startFakeEventMesh({ managementBasePath: '/sap-event-mesh/rest/api/v1' }))

module.exports = {
  local: {
    label: { ours: 'native-local-messaging', cds: '@sap/cds local-messaging', 'ours-batched': 'native-local-messaging, onBatch + emitMany' },
    procs: [1], // in-process by definition
    ours: () => ({ kind: 'native-local-messaging' }),
    'ours-batched': () => ({ kind: 'native-local-messaging' }),
    cds: () => ({ kind: 'local-messaging' }),
    notes: ['local: no raw client exists for an in-process queue; only one-process layouts apply.']
  },
  file: {
    label: { ours: 'native-file-based-messaging', cds: '@sap/cds file-based-messaging' },
    prepare: () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cds-native-bench-'))
      return { dir, file: path.join(dir, 'box') }
    },
    cleanup: ({ dir }) => fs.rmSync(dir, { recursive: true, force: true }),
    ours: ({ file }) => ({ kind: 'native-file-based-messaging', file }),
    cds: ({ file }) => ({ kind: 'file-based-messaging', file, outboxed: false }),
    // @sap/cds's file box waits 150 ms for its lock per contended emit: a few hundred messages take minutes.
    cdsN: ({ n, inflight }) => Math.min(n, inflight > 1 ? 200 : 40),
    notes: [
      'file: no raw JS client exists for the box format; @sap/cds file-based-messaging is measured with fewer messages (it manages a few msgs/s), rates are per second all the same.',
      'file: @sap/cds file-based-messaging is run with outboxed: false, so its emits are measured, not its in-memory outbox.'
    ]
  },
  redis: {
    label: {
      ours: 'native-redis-messaging (pubsub)',
      cds: '@sap/cds redis-messaging (outboxed: false, log warn)',
      'cds-default': '@sap/cds redis-messaging (defaults)',
      raw: 'node-redis v4',
      'ours-batched': 'native-redis-messaging (pubsub), onBatch + emitMany'
    },
    // @sap/cds rewrites redis://host to redis://:port unless the URI has a user: give it one
    ours: () => ({ kind: 'native-redis-messaging', credentials: { uri: 'redis://127.0.0.1:6379' } }),
    'ours-batched': () => ({ kind: 'native-redis-messaging', credentials: { uri: 'redis://127.0.0.1:6379' } }),
    cds: () => ({ kind: 'redis-messaging', credentials: { uri: 'redis://default:@127.0.0.1:6379' }, outboxed: false }),
    'cds-default': () => ({ kind: 'redis-messaging', credentials: { uri: 'redis://default:@127.0.0.1:6379' } }),
    raw: () => ({ url: 'redis://127.0.0.1:6379' }),
    versions: () => ({ 'redis-server': version('redis-server --version'), 'node-redis': require('redis/package.json').version }),
    notes: ['redis: pub/sub on the local Redis (127.0.0.1:6379); @sap/cds redis-messaging is run tuned (outboxed: false, log level warn for `redis-messaging`, the logger it logs every emit through) and with its defaults (outboxed, info log).']
  },
  'redis-streams': {
    label: {
      ours: 'native-redis-messaging (streams)',
      'ours-batched': 'native-redis-messaging (streams), onBatch + emitMany',
      'ours-pubsub': 'native-redis-messaging (pubsub), in the streams cell'
    },
    ours: () => ({ kind: 'native-redis-messaging', mode: 'streams', credentials: { uri: 'redis://127.0.0.1:6379' }, streamPrefix: `bench:${unique()}:`, queue: `bench-${unique()}` }),
    'ours-batched': () => ({ kind: 'native-redis-messaging', mode: 'streams', credentials: { uri: 'redis://127.0.0.1:6379' }, streamPrefix: `bench:${unique()}:`, queue: `bench-${unique()}` }),
    // our pub/sub in the same cell: the goal "streams ≥ 0.9× our pub/sub" as a paired ratio
    'ours-pubsub': () => ({ kind: 'native-redis-messaging', credentials: { uri: 'redis://127.0.0.1:6379' } }),
    notes: ['redis-streams: at-least-once on Redis Streams; neither @sap/cds nor a plain client offers this, so only our figures are shown, with our pub/sub in the same cell (`ours-pubsub`) for the ratio of the two modes.']
  },
  mqtt: {
    label: {
      ours: 'native-mqtt-messaging (QoS 1)',
      'ours-batched': 'native-mqtt-messaging (QoS 1), onBatch + emitMany',
      raw: 'mqtt.js (QoS 1, persistent session, PUBACK after the handler)',
      'raw-autoack': 'mqtt.js (QoS 1, clean session, PUBACK on receipt)'
    },
    prepare: async () => ({ url: await mqttUrl() }),
    finish: async () => {
      if (privateMosquitto) await (await privateMosquitto).stop()
      privateMosquitto = undefined
    },
    ours: ({ url }) => ({ kind: 'native-mqtt-messaging', url, qos: 1, queue: `bench-${unique()}` }),
    'ours-batched': ({ url }) => ({ kind: 'native-mqtt-messaging', url, qos: 1, queue: `bench-${unique()}` }),
    raw: ({ url }) => ({ url, qos: 1, ackAfterHandler: true, clientId: `bench-raw-${unique()}` }),
    'raw-autoack': ({ url }) => ({ url, qos: 1 }),
    versions: () => ({ mosquitto: version("mosquitto -h | sed -n 1p"), 'mqtt.js': require('mqtt/package.json').version }),
    notes: [
      `mqtt: @sap/cds has no MQTT kind; compared with mqtt.js at QoS 1 on ${process.env.BENCH_MQTT_URL || 'a private Mosquitto (its defaults, but max_queued_messages 0, so that a consumer that falls behind loses nothing)'}.` +
        ' The fair peer (`raw`) has the same contract as ours: a persistent session whose PUBACK is sent only after the handler ran; `raw-autoack` acknowledges on receipt (at-most-once to the app).'
    ]
  },
  amqp: {
    label: {
      ours: 'native-amqp-messaging (RabbitMQ, unsettled)',
      cds: '@sap/cds enterprise-messaging-shared (RabbitMQ addresses)',
      raw: 'rhea (unsettled, accept after the handler)',
      'raw-durable': 'rhea (unsettled, accept after the handler, durable messages)'
    },
    prepare: () => ({ queue: `bench.${unique()}` }),
    cleanup: ({ queue }) => {
      for (const q of [queue, `${queue}.raw`, `${queue}.rawd`, `${queue}.cds`]) version(`rabbitmqctl -q delete_queue ${q}`)
    },
    ours: ({ queue }) => ({ kind: 'native-amqp-messaging', url: 'amqp://127.0.0.1:5672', credentials: { user: 'guest', password: 'guest' }, queue: { name: queue } }),
    cds: ({ queue }) => ({
      kind: 'enterprise-messaging-shared',
      impl: path.join(__dirname, 'app', 'peers', 'cds-amqp-rabbitmq.js'),
      outboxed: false,
      queue: { name: `${queue}.cds` },
      // xb-msg-amqp-v100 connects over plain TCP for an amqp:// uri (SASL PLAIN guest/guest) and ignores oa2 then;
      // @sap/cds still reads oa2 from the binding, so it is present.
      credentials: { messaging: [{ protocol: ['amqp10ws'], uri: 'amqp://127.0.0.1:5672', oa2: { clientid: 'bench', clientsecret: 'bench', tokenendpoint: 'http://127.0.0.1:9/oauth/token' } }] }
    }),
    raw: ({ queue }) => ({ queue: `${queue}.raw` }),
    // the same per-message work for RabbitMQ as ours: persistent messages (header.durable) in a durable queue
    // (bench/raw/amqp.js). @sap/cds's AMQP kind sets no message header, so its messages are transient.
    'raw-durable': ({ queue }) => ({ queue: `${queue}.rawd`, durable: true }),
    versions: () => ({ rabbitmq: version("rabbitmqctl -q version"), rhea: require('rhea/package.json').version }),
    notes: [
      'amqp: RabbitMQ 3.10 with the AMQP 1.0 plugin (its own ceiling is about 8–9k msgs/s here). Ours publishes durable messages to amq.topic and consumes its bound queue; rhea publishes to and consumes from a queue address directly (one hop less), with non-durable messages in a non-durable queue (`raw`) and with durable ones in a durable queue as ours (`raw-durable`, the same persistence work for RabbitMQ: it persists a persistent message only in a durable queue; before 4 December this peer used a non-durable queue, so RabbitMQ persisted nothing of it).',
      "amqp: @sap/cds's AMQP kind (enterprise-messaging-shared) runs through bench/app/peers/cds-amqp-rabbitmq.js, which changes only its link addresses (RabbitMQ 3.x understands neither Event Mesh's anonymous 'topic:' sender nor 'queue:' sources) and skips Event Mesh's management API; its per-message path is @sap/cds's own. It uses the same /queue/<q> one-hop path as rhea, and its messages are transient (its emit sets no header.durable), so RabbitMQ persists nothing of them."
    ]
  },
  'event-mesh': {
    label: {
      ours: 'native-event-mesh-shared (AMQP over WebSocket, OAuth2)',
      cds: '@sap/cds event-mesh-shared (outboxed: false)'
    },
    prepare: async ({ topic }) => {
      const fake = await eventMesh()
      const queue = `bench/${unique()}`
      // @sap/cds's management calls go to https:443 whatever the binding says (see
      // bench/app/peers/cds-event-mesh-fake.js): its queue and subscription are made here, as those calls would.
      fake.broker.putQueue(`${queue}/cds`, {})
      fake.broker.queue(`${queue}/cds`).subscriptions.add(topic)
      return { fake, queue, credentials: fake.binding({ namespace: 'bench/ns/1' }) }
    },
    cleanup: ({ fake, queue }) => {
      for (const q of [queue, `${queue}/cds`]) fake.broker.deleteQueue(q)
    },
    finish: async () => {
      if (fakeEventMesh) await (await fakeEventMesh).close()
      fakeEventMesh = undefined
    },
    // ours provisions its queue and subscription through the fake's management API itself
    ours: ({ queue, credentials }) => ({ kind: 'native-event-mesh-shared', managementBasePath: '/sap-event-mesh/rest/api/v1', credentials, queue: { name: queue } }),
    cds: ({ queue, credentials }) => ({
      kind: 'event-mesh-shared',
      impl: path.join(__dirname, 'app', 'peers', 'cds-event-mesh-fake.js'),
      outboxed: false,
      credentials,
      queue: { name: `${queue}/cds` }
    }),
    versions: () => ({ '@sap/xb-msg-amqp-v100': require('@sap/xb-msg-amqp-v100/package.json').version }),
    notes: [
      "event-mesh: both kinds against the FAKE Event Mesh of __test__/fake-event-mesh (token endpoint over http, ws:// gateway, an in-memory broker in bench/run.js's own process, whose CPU is not counted), with Event Mesh's addresses (anonymous sender with `to: topic:<t>`, receiver on `queue:<q>`). No real Event Mesh is reachable here; the broker's speed caps both alike.",
      "event-mesh: @sap/cds's kind runs through bench/app/peers/cds-event-mesh-fake.js, which only skips its management calls (they go to https:443, which a shared machine cannot give a benchmark); its queue and subscription are created beforehand. Token, WebSocket, links and per-message path are @sap/cds's own."
    ]
  }
}
