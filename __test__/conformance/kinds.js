'use strict'
// The implementations under test: what each kind promises (capabilities) and how to configure it
// for one run (unique queue, topic, stream and box names; private brokers where a scenario may
// restart them). Modelled on Watermill's pubsub/tests Features.
const fs = require('node:fs')
const path = require('node:path')
const { tmpDir } = require('../helpers')
const { privateRedis, rawClient } = require('../redis-helpers')
const { startMosquitto } = require('../mosquitto')
const { watch, purgeSessions } = require('../mqtt-client')
const { ensureRabbit, cuttableProxy, deleteQueues } = require('../amqp-helpers')
const { freePort } = require('../helpers')

/** This run's id: part of every name a scenario creates. */
const RUN = `c${process.pid}${Date.now().toString(36)}`

/**
 * Capabilities (a scenario runs on a kind only when the kind has every capability it requires):
 * - persistent: messages emitted while the consumer is down wait for it (a SIGKILLed consumer loses nothing)
 * - sharedQueue: consumer processes of one queue split its messages without duplicates between healthy ones
 * - fanOutPerApp: two apps with default configuration each get every message
 * - brokerRedelivery: the broker (not only the process) redelivers what was not acknowledged
 * - ordering: one consumer with maxInFlight 1 gets one publisher's messages in emit order
 * - wildcard: `on('*')` (with forceListening) receives every topic
 * - deadLetter: where dead letters go ('memory', 'file', 'stream', 'topic', 'exchange')
 * - multiProcess: several processes can talk through it
 * - brokerRestart: 'private' (a broker this suite may restart), 'proxy' (a TCP proxy to cut), or false
 * - syncEmit: emit resolves after the receivers processed the message (and rejects when they failed)
 * - backlogWithoutConsumer: messages emitted before any consumer listened wait for it (the box file)
 */
const kinds = {
  local: {
    kind: 'native-local-messaging',
    notes: { multiProcess: 'an in-process queue', persistent: 'an in-process queue: nothing outlives the process', brokerRestart: 'no broker', sharedQueue: 'an in-process queue', fanOutPerApp: 'an in-process queue' },
    caps: { persistent: false, sharedQueue: false, fanOutPerApp: false, brokerRedelivery: false, ordering: true, wildcard: true, deadLetter: 'memory', multiProcess: false, brokerRestart: false, syncEmit: true },
    async setup() {
      return {
        config: (name, extra = {}) => ({ kind: 'native-local-messaging', maxAttempts: 3, retryDelay: 20, ...extra }),
        deadLetters: memoryDeadLetters,
        badOptions: [{ maxAttempts: -1 }],
        teardown: async () => {}
      }
    }
  },

  file: {
    kind: 'native-file-based-messaging',
    caps: { persistent: true, sharedQueue: true, fanOutPerApp: false, brokerRedelivery: false, ordering: true, wildcard: true, deadLetter: 'file', multiProcess: true, brokerRestart: false, backlogWithoutConsumer: true },
    notes: { brokerRestart: 'no broker: the box is a file', fanOutPerApp: 'one box is one queue: apps on one box share its messages, as with @sap/cds file-based-messaging' },
    async setup() {
      const dir = tmpDir('conformance-file')
      const box = name => path.join(dir, `${name}.box`)
      return {
        config: (name, extra = {}) => ({ kind: 'native-file-based-messaging', file: box(name), maxAttempts: 3, retryDelay: 20, interval: 200, ...extra }),
        sharedConfig: name => ({ kind: 'native-file-based-messaging', file: box(name), interval: 200 }),
        deadLetters: (svc, cfg) => ({
          list: async () => {
            const file = `${cfg.file}.dead`
            if (!fs.existsSync(file)) return []
            return fs
              .readFileSync(file, 'utf8')
              .split('\n')
              .filter(Boolean)
              .map(l => ({ topic: l.slice(0, l.indexOf(' ')), data: JSON.parse(l.slice(l.indexOf(' ') + 1)).data }))
          },
          close: async () => {}
        }),
        badOptions: [{ lockTimeout: 'soon' }, { watch: 'maybe' }],
        teardown: async () => {}
      }
    }
  },

  'redis-pubsub': {
    kind: 'native-redis-messaging',
    caps: { persistent: false, sharedQueue: false, fanOutPerApp: true, brokerRedelivery: false, ordering: true, wildcard: true, deadLetter: 'memory', multiProcess: true, brokerRestart: 'private' },
    notes: { persistent: 'Redis pub/sub is at-most-once: a consumer that is down misses messages', sharedQueue: 'pub/sub has no consumer groups: every subscriber gets every message' },
    async setup() {
      const redis = await privateRedis(`conformance-pubsub-${RUN}`)
      const base = { kind: 'native-redis-messaging', credentials: { uri: redis.url }, reconnectDelay: 50, maxReconnectDelay: 500 }
      return {
        config: (name, extra = {}) => ({ ...base, maxAttempts: 3, retryDelay: 20, ...extra }),
        defaultConfig: () => ({ kind: 'native-redis-messaging', credentials: { uri: redis.url } }),
        deadLetters: memoryDeadLetters,
        broker: { restart: () => redis.restart() },
        badOptions: [{ mode: 'queue' }, { connectTimeout: 'fast' }],
        teardown: () => redis.stop()
      }
    }
  },

  'redis-streams': {
    kind: 'native-redis-messaging',
    caps: { persistent: true, sharedQueue: true, fanOutPerApp: true, brokerRedelivery: true, ordering: true, wildcard: true, deadLetter: 'stream', multiProcess: true, brokerRestart: 'private' },
    async setup() {
      const redis = await privateRedis(`conformance-streams-${RUN}`)
      const base = { kind: 'native-redis-messaging', mode: 'streams', credentials: { uri: redis.url }, reconnectDelay: 50, maxReconnectDelay: 500 }
      const raw = await rawClient(redis.url)
      const config = (name, extra = {}) => ({ ...base, streamPrefix: `${RUN}:${name}:`, queue: { name: `q-${RUN}-${name}` }, block: 200, claimAfter: 1000, maxAttempts: 3, retryDelay: 20, ...extra })
      return {
        config,
        sharedConfig: name => config(name),
        defaultConfig: () => ({ kind: 'native-redis-messaging', mode: 'streams', credentials: { uri: redis.url } }),
        deadLetters: (svc, cfg) => ({
          list: async () => (await raw.xRange(`${cfg.streamPrefix}${cfg.queue.name}:dead-letter`, '-', '+')).map(e => ({ topic: e.message.topic, data: JSON.parse(e.message.payload).data })),
          close: async () => {}
        }),
        broker: { restart: () => redis.restart() },
        badOptions: [{ claimAfter: 'later' }, { maxLen: -3 }],
        teardown: async () => {
          await raw.quit().catch(() => {})
          await redis.stop()
        }
      }
    }
  },

  mqtt: {
    kind: 'native-mqtt-messaging',
    caps: { persistent: true, sharedQueue: true, fanOutPerApp: true, brokerRedelivery: true, ordering: true, wildcard: true, deadLetter: 'topic', multiProcess: true, brokerRestart: 'private' },
    async setup() {
      // A private Mosquitto for every MQTT scenario: `'*'` subscribes `#`, the restart scenario stops
      // it, and max_queued_messages must not drop a SIGKILLed consumer's backlog (README: broker limits).
      const dir = tmpDir('conformance-mosquitto-data')
      fs.chmodSync(dir, 0o777) // Mosquitto started as root writes its database as user mosquitto
      const broker = await startMosquitto({ extra: ['max_queued_messages 0', 'persistence true', `persistence_location ${dir}/`] })
      const url = `mqtt://127.0.0.1:${broker.port}`
      const sessions = []
      const config = (name, extra = {}) => {
        const queue = `${RUN}-${name}`
        sessions.push(queue)
        return { kind: 'native-mqtt-messaging', url, queue, maxAttempts: 3, retryDelay: 20, reconnectDelay: 50, maxReconnectDelay: 500, ...extra }
      }
      let shared = 0
      return {
        config,
        // Shared subscriptions: one group, a queue (session) of its own per consumer.
        sharedConfig: name => config(`${name}-${shared++}`, { sharedGroup: `g${RUN}${name}` }),
        defaultConfig: () => ({ kind: 'native-mqtt-messaging', url }),
        deadLetters: async (svc, cfg) => {
          const got = await watch(url, `dead-letter/${cfg.queue}/#`)
          return {
            list: async () => got.map(m => ({ topic: m.topic.slice(`dead-letter/${cfg.queue}/`.length).replace(/\/\d{13}-[0-9a-f]{8}$/, ''), data: JSON.parse(m.payload).data })),
            close: () => got.close()
          }
        },
        broker: {
          restart: async () => {
            await broker.stop('SIGTERM') // a graceful restart: Mosquitto saves its sessions
            await broker.start()
          }
        },
        badOptions: [{ qos: 2 }, { topicSeparator: ':' }],
        teardown: async () => {
          await purgeSessions(url, sessions)
          await broker.stop()
        }
      }
    }
  },

  amqp: {
    kind: 'native-amqp-messaging',
    caps: { persistent: true, sharedQueue: true, fanOutPerApp: true, brokerRedelivery: true, ordering: true, wildcard: true, deadLetter: 'exchange', multiProcess: true, brokerRestart: 'proxy' },
    notes: { brokerRestart: 'RabbitMQ is shared: a TCP proxy is cut instead' },
    async setup() {
      await ensureRabbit()
      // The shared RabbitMQ is never restarted: connections that need an outage go through a proxy.
      const proxyPort = await freePort()
      const proxy = cuttableProxy()
      await proxy.listen(proxyPort)
      const credentials = port => ({ url: `amqp://127.0.0.1:${port}`, user: 'guest', password: 'guest' })
      const queues = new Set()
      const config = (name, extra = {}, port = 5672) => {
        const queue = `${RUN}-${name}`
        queues.add(queue)
        return {
          kind: 'native-amqp-messaging',
          profile: 'rabbitmq',
          credentials: credentials(port),
          queue: { name: queue, deadLetterExchange: 'amq.topic', deadLetterRoutingKey: `${RUN}.dead.${name}` },
          maxAttempts: 3,
          retryDelay: 20,
          connection: { reconnectDelay: 50, maxReconnectDelay: 500 },
          ...extra
        }
      }
      const watchers = []
      return {
        config,
        sharedConfig: name => config(name),
        defaultConfig: () => ({ kind: 'native-amqp-messaging', credentials: credentials(5672) }),
        // The queue's x-dead-letter-exchange is amq.topic with a routing key of its own; a second
        // service consumes that key.
        deadLetters: async (svc, cfg) => {
          const cds = require('@sap/cds')
          const name = cfg.queue.name.slice(RUN.length + 1)
          const watcher = await cds.connect.to(config(`${name}-dlw`))
          watchers.push(watcher)
          const got = []
          const record = msg => got.push({ topic: msg.event, data: msg.data })
          // Bound by the dead-letter key; '*' too, as the message may still name its original topic.
          watcher.on(cfg.queue.deadLetterRoutingKey, record)
          watcher.on('*', record)
          await watcher.startListening()
          await watcher.emit(`${cfg.queue.deadLetterRoutingKey}.ready`, {}).catch(() => {}) // waits until its queue is bound
          return { list: async () => got, close: async () => {} }
        },
        proxied: (name, extra = {}) => config(name, extra, proxyPort),
        broker: {
          restart: async () => {
            await proxy.cut()
            await new Promise(r => setTimeout(r, 1000))
            await proxy.listen(proxyPort)
          }
        },
        badOptions: [{ profile: 'no-such-broker' }, { qos: 5 }],
        teardown: async () => {
          await Promise.all(watchers.map(w => w.disconnect().catch(() => {})))
          await proxy.cut().catch(() => {})
          // With them the derived default queues of the two-apps scenario (their names hold RUN).
          deleteQueues([...queues], RUN)
        }
      }
    }
  }
}

/** Dead letters the engine keeps in memory (local kind, Redis pub/sub). */
function memoryDeadLetters(svc) {
  return {
    list: async () => svc.deadLetters().map(d => ({ topic: d.topic, data: JSON.parse(d.payload).data })),
    close: async () => {}
  }
}

module.exports = { kinds, RUN }
