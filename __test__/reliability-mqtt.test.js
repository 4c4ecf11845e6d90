'use strict'
// native-mqtt-messaging (issue #14): a service that only emits opens no consumer session
// (defect 4), a session takeover is reported, an emit to a broker never reached fails fast (defect 11).
const RUN = `${process.pid}${Date.now().toString(36)}`
const URL = 'mqtt://127.0.0.1:1883'
const cds = require('@sap/cds')
const { until, assertBroker, freePort } = require('./helpers')
const { purgeSessions } = require('./mqtt-client')

const sessions = []
const services = []
async function connect(name, options) {
  const svc = await cds.connect.to(`${name}-${RUN}`, { kind: 'native-mqtt-messaging', url: URL, maxAttempts: 2, retryDelay: 10, ...options })
  services.push(svc)
  return svc
}

describe('native-mqtt-messaging under misconfiguration', () => {
  beforeAll(() => assertBroker('Mosquitto', 1883, 'apt-get install mosquitto && mosquitto -d -c /etc/mosquitto/mosquitto.conf'))
  const log = cds.test.log()
  afterAll(async () => {
    await Promise.all(services.map(s => s.disconnect()))
    await purgeSessions(URL, sessions)
  })

  test('an emitting and a receiving service with the same queue: the emitter opens no session, all 5 arrive', async () => {
    // The README's example copied into an emitting and a receiving app.
    const queue = `rel-${RUN}-shared`
    sessions.push(queue)
    const topic = `rel${RUN}/reviewed`
    const receiver = await connect('mqtt-receiver', { queue })
    const emitter = await connect('mqtt-emitter', { queue })
    const got = []
    receiver.on(topic, msg => got.push(msg.data.i))
    await receiver.startListening()
    await emitter.startListening()
    await new Promise(r => setTimeout(r, 1000)) // time for a session ping-pong to start
    for (let i = 0; i < 5; i++) await emitter.emit(topic, { i })
    await until(() => got.length >= 5, 10000, 'the five messages')
    await new Promise(r => setTimeout(r, 500))
    expect(got.sort()).toEqual([0, 1, 2, 3, 4])
    expect(log.output).not.toMatch(/No handler|right after accepting it/)
    // One consumer connection with that client id: the receiver's (the emitter opened none).
    const id = queue.replace(/[^A-Za-z0-9_.-]+/g, '-')
    const consumers = log.output.split('\n').filter(l => /connected consumer /.test(l) && l.includes(`as '${id}'`))
    expect(consumers).toHaveLength(1)
  }, 30000)

  test('two services that both consume with one client id: the takeover is logged with the client id', async () => {
    const queue = `rel-${RUN}-takeover`
    sessions.push(queue)
    const a = await connect('mqtt-take-a', { queue, reconnectDelay: 50, maxReconnectDelay: 200 })
    const b = await connect('mqtt-take-b', { queue, reconnectDelay: 50, maxReconnectDelay: 200 })
    a.on(`rel${RUN}/a`, () => {})
    b.on(`rel${RUN}/b`, () => {})
    await Promise.all([a.startListening(), b.startListening()])
    await until(() => /right after accepting it/.test(log.output), 15000, 'the takeover error')
    expect(log.output).toMatch(new RegExp(`client id '${queue.replace(/[^A-Za-z0-9_.-]+/g, '-')}'`))
    await Promise.all([a.disconnect(), b.disconnect()])
  }, 30000)

  test('emit when the broker was never reached fails fast with CONNECTION_FAILED', async () => {
    const port = await freePort() // nothing listens there
    const m = await connect('mqtt-nobroker', { url: `mqtt://127.0.0.1:${port}`, queue: `rel-${RUN}-nobroker`, reconnectDelay: 100 })
    const t0 = Date.now()
    const err = await m.emit(`rel${RUN}/x`, {}).catch(e => e)
    const ms = Date.now() - t0
    expect(err?.code).toBe('CONNECTION_FAILED')
    expect(ms).toBeLessThan(10000) // was publishTimeout (30 s)
    expect(err.message).toMatch(/not confirmed by broker .* in time \(not connected: .*never reached/)
  }, 40000)
})
