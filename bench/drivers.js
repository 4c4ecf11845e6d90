'use strict'
// What the benchmark compares, per transport: the messaging config of our kind (`ours`), of
// @sap/cds's own kind for the same backend (`cds`) and, where one exists, a raw JS client (`raw`,
// implemented in bench/raw/<driver>.js). `cdsN` caps the message count of @sap/cds's kind where it
// is too slow for the full count; `procs` restricts the process layouts that make sense.
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
const unique = () => `${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 6)}`

module.exports = {
  local: {
    label: { ours: 'native-local-messaging', cds: '@sap/cds local-messaging' },
    procs: [1], // in-process by definition
    ours: () => ({ kind: 'native-local-messaging' }),
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
    label: { ours: 'native-redis-messaging (pubsub)', cds: '@sap/cds redis-messaging', raw: 'node-redis v4' },
    // @sap/cds rewrites redis://host to redis://:port unless the URI has a user: give it one
    ours: () => ({ kind: 'native-redis-messaging', credentials: { uri: 'redis://127.0.0.1:6379' } }),
    cds: () => ({ kind: 'redis-messaging', credentials: { uri: 'redis://default:@127.0.0.1:6379' }, outboxed: false }),
    raw: () => ({ url: 'redis://127.0.0.1:6379' }),
    versions: () => ({ 'redis-server': version('redis-server --version'), 'node-redis': require('redis/package.json').version }),
    notes: ['redis: pub/sub on the local Redis (127.0.0.1:6379); @sap/cds redis-messaging is run with outboxed: false.']
  },
  'redis-streams': {
    label: { ours: 'native-redis-messaging (streams)' },
    ours: () => ({ kind: 'native-redis-messaging', mode: 'streams', credentials: { uri: 'redis://127.0.0.1:6379' }, streamPrefix: `bench:${unique()}:`, queue: `bench-${unique()}` }),
    notes: ['redis-streams: at-least-once on Redis Streams; neither @sap/cds nor a plain client offers this, so only our figures are shown.']
  },
  mqtt: {
    label: { ours: 'native-mqtt-messaging (QoS 1)', raw: 'mqtt.js (QoS 1)' },
    ours: () => ({ kind: 'native-mqtt-messaging', url: 'mqtt://127.0.0.1:1883', qos: 1, queue: `bench-${unique()}` }),
    raw: () => ({ url: 'mqtt://127.0.0.1:1883', qos: 1 }),
    versions: () => ({ mosquitto: version("mosquitto -h | sed -n 1p"), 'mqtt.js': require('mqtt/package.json').version }),
    notes: ['mqtt: @sap/cds has no MQTT kind; compared with mqtt.js at QoS 1 on the local Mosquitto (127.0.0.1:1883).']
  },
  amqp: {
    label: { ours: 'native-amqp-messaging (RabbitMQ, unsettled)', raw: 'rhea (unsettled, manual accept)' },
    prepare: () => ({ queue: `bench.${unique()}` }),
    cleanup: ({ queue }) => {
      for (const q of [queue, `${queue}.raw`]) version(`rabbitmqctl -q delete_queue ${q}`)
    },
    ours: ({ queue }) => ({ kind: 'native-amqp-messaging', url: 'amqp://127.0.0.1:5672', credentials: { user: 'guest', password: 'guest' }, queue: { name: queue } }),
    raw: ({ queue }) => ({ queue: `${queue}.raw` }),
    versions: () => ({ rabbitmq: version("rabbitmqctl -q version"), rhea: require('rhea/package.json').version }),
    notes: [
      'amqp: RabbitMQ 3.10 with the AMQP 1.0 plugin (its own ceiling is about 8–9k msgs/s here). Ours publishes to amq.topic and consumes its bound queue; rhea publishes to and consumes from a queue address directly (one hop less).',
      "amqp: @sap/cds's AMQP kind (enterprise-messaging-shared) cannot be pointed at the local broker: it connects over WebSocket with an OAuth2 client-credentials token taken from an Event Mesh binding (credentials.messaging[].oa2 and a wss:// uri), which RabbitMQ does not offer; no @sap/cds figures are shown."
    ]
  }
}
