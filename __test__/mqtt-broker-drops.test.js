'use strict'
// Messages Mosquitto drops because of its queue limits are not lost without a trace: the consumer
// watches $SYS/broker/publish/messages/dropped and logs an error (issue #16: a benchmark run lost
// messages to `max_queued_messages` with nothing in any log). A private Mosquitto with a tiny queue
// limit and a one-second $SYS interval; a consumer whose handler does not finish.
const cds = require('@sap/cds')
const { until } = require('./helpers')
const { startMosquitto } = require('./mosquitto')
const { cli } = require('./ops-helpers')

const RUN = `${process.pid}${Date.now().toString(36)}`
const KIND = 'native-mqtt-messaging'
// "<n> message(s) dropped … since its previous report", or, when the watch began without a count to
// compare with (Mosquitto's retained count expires after 60 s; a fresh broker has none), "its count rose to <n>"
const DROPPED = /native-mqtt-messaging.*the MQTT broker reports (?:(\d+) message\(s\) dropped because of its queue limits|messages dropped because of its queue limits \(its count rose to (\d+))/

describe('native-mqtt-messaging: messages the broker drops are logged', () => {
  const log = cds.test.log()
  let broker
  let release
  const gate = new Promise(r => (release = r))
  const services = []
  const connect = async options => {
    const svc = await cds.connect.to({ kind: KIND, url: `mqtt://127.0.0.1:${broker.port}`, reconnectDelay: 50, ...options })
    services.push(svc)
    return svc
  }
  beforeAll(async () => {
    broker = await startMosquitto({ extra: ['max_queued_messages 5', 'max_inflight_messages 2', 'sys_interval 1'] })
  })
  afterAll(async () => {
    release()
    await Promise.all(services.map(s => s.disconnect()))
    await broker?.stop()
  })

  const fill = async (consumer, producer, topic) => {
    let started = 0
    consumer.on(topic, () => (started++, gate))
    await consumer.startListening()
    await consumer.emit(topic, { n: -1 }) // its own emit waits for its SUBACK: the session has the subscription
    await until(() => started === 1, 5000, 'the first delivery')
    // every emit is confirmed by the broker, though its queue for the busy consumer holds 5
    await Promise.all(Array.from({ length: 60 }, (_, n) => producer.emit(topic, { n })))
  }

  test('a consumer that falls behind: the drops are logged as an error that says what to do', async () => {
    const consumer = await connect({ queue: `drops-${RUN}` })
    const producer = await connect({ queue: `drops-${RUN}-producer` })
    await fill(consumer, producer, `drops${RUN}`)
    await until(() => DROPPED.test(log.output), 10000, 'the error about dropped messages')
    const line = log.output.split('\n').find(l => DROPPED.test(l))
    const m = DROPPED.exec(line)
    expect(Number(m[1] ?? m[2])).toBeGreaterThan(0)
    expect(line).toMatch(/max_queued_messages/)
    expect(line).toMatch(`as 'drops-${RUN}'`)
    // doctor shows the broker's count as a fact
    const r = await cli(['doctor'], { kind: KIND, url: `mqtt://127.0.0.1:${broker.port}`, queue: `drops-${RUN}-doctor` })
    const shown = /broker dropped: +(\d+) message\(s\) since the broker started/.exec(r.stdout)
    expect(shown).not.toBeNull()
    expect(Number(shown[1])).toBeGreaterThan(0)
  })

  test('watchBrokerDrops: false watches nothing', async () => {
    const before = log.output.split('\n').filter(l => DROPPED.test(l)).length
    const consumer = await connect({ queue: `quiet-${RUN}`, watchBrokerDrops: false })
    const producer = await connect({ queue: `quiet-${RUN}-producer` })
    await fill(consumer, producer, `quiet${RUN}`)
    await new Promise(r => setTimeout(r, 2500)) // two $SYS intervals
    const lines = log.output.split('\n').filter(l => DROPPED.test(l)).slice(before)
    expect(lines.filter(l => l.includes(`quiet-${RUN}`))).toEqual([])
  })
})
