'use strict'
// `dead-letters list|show|redeliver|purge` against the shared Mosquitto (dead letters kept retained,
// one topic each) and RabbitMQ (the service's dead-letter queue): a message dead-lettered by an
// always-failing handler is listed (and stays), redelivered with its headers to the fixed handler
// (a toggle file), and purged.
const { deleteQueues, ensureRabbit } = require('./amqp-helpers')
const fs = require('node:fs')
const path = require('node:path')
const { tmpDir, until } = require('./helpers')
const { cli, app, killAll } = require('./ops-helpers')
const { rawClient, purgeSessions } = require('./mqtt-client')

const run = `${process.pid}${Math.random().toString(36).slice(2, 6)}`
const MQTT_URL = 'mqtt://127.0.0.1:1883'
const mqttQueue = `opsdl-${run}`
const mqtt = (extra = {}) => ({ kind: 'native-mqtt-messaging', url: MQTT_URL, queue: mqttQueue, maxAttempts: 2, retryDelay: 20, ...extra })
const amqpQueue = `opsdl.${run}`
const amqpDlq = `opsdl.${run}.dlq`
const amqp = (extra = {}) => ({ kind: 'native-amqp-messaging', url: 'amqp://guest:guest@127.0.0.1:5672', queue: { name: amqpQueue, deadLetterQueue: amqpDlq }, maxAttempts: 2, retryDelay: 20, ...extra })
const got = p => p.lines().filter(l => l.got).map(l => l.got)
const list = async conf => {
  const r = await cli(['dead-letters', 'list', '--json'], conf)
  if (r.code !== 0) throw new Error(`dead-letters list failed: ${r.stdout}${r.stderr}`)
  return JSON.parse(r.stdout)
}
const dir = tmpDir('ops-dead-letters')

/** What a fresh MQTT subscriber gets of `filter` as retained messages within `ms`. */
async function retained(filter, ms = 600) {
  const c = await rawClient(MQTT_URL, { clientId: `retained-${run}-${Math.random().toString(36).slice(2, 6)}` })
  const seen = []
  c.on('message', (topic, payload, packet) => packet.retain && payload.length && seen.push({ topic, payload: payload.toString() }))
  await c.subscribeAsync(filter, { qos: 1 })
  await new Promise(r => setTimeout(r, ms))
  await c.endAsync()
  return seen
}

afterAll(async () => {
  killAll()
  // whatever a failed run left retained, and the sessions
  const c = await rawClient(MQTT_URL).catch(() => null)
  if (c) {
    for (const q of [mqttQueue, `${mqttQueue}-early`]) for (const m of await retained(`dead-letter/${q}/#`).catch(() => [])) await c.publishAsync(m.topic, '', { qos: 1, retain: true })
    await c.endAsync()
  }
  await purgeSessions(MQTT_URL, [mqttQueue, `${mqttQueue}-early`])
  // The queues the receiving apps created (durable, on the shared broker).
  deleteQueues([amqpQueue, amqpDlq, `opsdl.none.${run}`])
})

// RabbitMQ with its AMQP 1.0 plugin (enabled if it is not): the AMQP tests must not depend on a suite run before.
beforeAll(ensureRabbit, 150000)

test('MQTT: a dead letter is kept retained on a topic of its own; list (twice: nothing consumed), show, redeliver to the fixed handler with its headers, purge', async () => {
  const topic = `opsdl${run}/orders`
  const failFile = path.join(dir, 'mqtt-broken')
  fs.writeFileSync(failFile, '')
  const rx = app('receive', mqtt(), { topics: [topic], failFile })
  await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
  expect((await cli(['send', topic, '{"n":1}', '-H', 'x-keep=me'], mqtt())).code).toBe(0)
  await until(async () => (await list(mqtt())).length === 1, 15000, 'the dead letter')

  const [d] = await list(mqtt())
  expect(d).toMatchObject({ topic, payload: JSON.stringify({ 'x-keep': 'me', data: { n: 1 } }) })
  expect(d.id).toMatch(/^\d{13}-[0-9a-f]{8}$/)
  expect(d.mqttTopic).toBe(`dead-letter/${mqttQueue}/${topic}/${d.id}`)
  expect(Date.now() - Date.parse(d.time)).toBeLessThan(60000)
  // the broker keeps it for any later subscriber
  expect(await retained(`dead-letter/${mqttQueue}/#`)).toEqual([{ topic: d.mqttTopic, payload: d.payload }])
  expect(await list(mqtt())).toEqual([d])
  const human = await cli(['dead-letters', 'list'], mqtt())
  expect(human.stdout).toContain(`1 dead letter(s) in retained topics dead-letter/${mqttQueue}/#`)
  expect(human.stdout).toContain(`${d.id}  ${d.time}  ${topic}`)
  const show = await cli(['dead-letters', 'show', d.id], mqtt())
  expect(show.stdout).toContain('"x-keep": "me"')
  expect(JSON.parse((await cli(['dead-letters', 'list', '--json', '--older-than', '1h'], mqtt())).stdout)).toEqual([])
  expect(JSON.parse((await cli(['dead-letters', 'list', '--json', '--topic', 'other/*'], mqtt())).stdout)).toEqual([])
  const doctor = await cli(['doctor'], mqtt())
  expect(doctor.stdout).toContain(`dead letter topic:  dead-letter/${mqttQueue}/<topic>/<id> (retained)`)
  expect(doctor.stdout).toContain(`! 1 dead letter(s) kept under dead-letter/${mqttQueue}/#`)

  fs.unlinkSync(failFile)
  const re = await cli(['dead-letters', 'redeliver', '--json', '--older-than', '0s', '--topic', `opsdl${run}/*`], mqtt())
  expect(JSON.parse(re.stdout)).toMatchObject({ selected: 1, redelivered: 1 })
  await until(() => got(rx).length === 1, 15000, 'the redelivered message')
  expect(got(rx)[0]).toMatchObject({ topic, data: { n: 1 }, headers: { 'x-keep': 'me' } })
  expect(await list(mqtt())).toEqual([])
  expect(await retained(`dead-letter/${mqttQueue}/#`)).toEqual([])

  // purge: a second dead letter, removed for good
  fs.writeFileSync(failFile, '')
  await cli(['send', topic, '{"n":2}'], mqtt())
  await until(async () => (await list(mqtt())).length === 1, 15000, 'the second dead letter')
  const refused = await cli(['dead-letters', 'purge'], mqtt())
  expect(refused.code).toBe(1)
  expect(refused.stderr).toContain('purge removes dead letters for good')
  const purge = await cli(['dead-letters', 'purge', '--topic', topic], mqtt())
  expect(purge.stdout).toContain(`purged 1 of 1 selected dead letter(s) from retained topics dead-letter/${mqttQueue}/#`)
  expect(await list(mqtt())).toEqual([])
  expect(got(rx)).toHaveLength(1)
  await rx.stop()
}, 90000)

test('MQTT: a message dead-lettered while others of its batch still run is kept, and the host survives (settling on the JS thread)', async () => {
  const [fails, slow] = [`opsdl${run}/early/fails`, `opsdl${run}/early/slow`]
  const conf = mqtt({ maxAttempts: 1, queue: `${mqttQueue}-early` })
  const rx = app('receive', conf, { topics: [fails, slow], failTopics: [fails], delayMs: 300 })
  await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
  await new Promise(r => setTimeout(r, 300)) // the SUBACK
  const c = await rawClient(MQTT_URL)
  const gone = () => rx.child.exitCode !== null || rx.child.signalCode !== null
  try {
    for (let i = 0; i < 5; i++) {
      c.publish(slow, JSON.stringify({ data: { i } }), { qos: 1 })
      c.publish(fails, JSON.stringify({ data: { i } }), { qos: 1 })
    }
    await until(() => got(rx).length === 5 || gone(), 20000, 'the slow ones')
  } finally {
    await c.endAsync()
  }
  expect(rx.stderr()).not.toContain('panicked')
  expect(gone()).toBe(false)
  await until(async () => (await list(conf)).length === 5, 15000, 'five dead letters')
  expect((await list(conf)).map(d => d.topic)).toEqual(Array(5).fill(fails))
  expect((await cli(['dead-letters', 'purge', '--all'], conf)).stdout).toContain('purged 5 of 5')
  await rx.stop()
}, 60000)

test('MQTT with deadLetterRetain: false: doctor and dead-letters say that nothing keeps them', async () => {
  const r = await cli(['dead-letters', 'list'], mqtt({ deadLetterRetain: false }))
  expect(r.code).toBe(1)
  expect(r.stderr).toContain('deadLetterRetain is off')
  const doctor = await cli(['doctor'], mqtt({ deadLetterRetain: false }))
  expect(doctor.stdout).toContain('(not retained)')
  expect(doctor.stdout).toContain('! dead letters are not retained')
})

test('AMQP (RabbitMQ): queue.deadLetterQueue keeps the dead letters; list (nothing taken), show, redeliver into the app queue with its headers, purge', async () => {
  const topic = `opsdl${run}.orders`
  const failFile = path.join(dir, 'amqp-broken')
  fs.writeFileSync(failFile, '')
  const rx = app('receive', amqp(), { topics: [topic], failFile })
  await until(() => rx.lines().some(l => l.ready), 30000, 'receiver ready')
  expect((await cli(['send', topic, '{"n":1}', '-H', 'x-keep=me'], amqp())).code).toBe(0)
  await until(async () => (await list(amqp())).length === 1, 20000, 'the dead letter')

  const [d] = await list(amqp())
  expect(d).toMatchObject({ topic, payload: JSON.stringify({ 'x-keep': 'me', data: { n: 1 } }) })
  expect(d.id).toMatch(/^[0-9a-f]{32}$/) // the message-id the emit gave it
  expect(await list(amqp())).toEqual([d]) // held unsettled and released: still there
  const human = await cli(['dead-letters', 'list'], amqp())
  expect(human.stdout).toContain(`1 dead letter(s) in queue ${amqpDlq}`)
  const show = await cli(['dead-letters', 'show', d.id], amqp())
  expect(show.stdout).toContain('"x-keep": "me"')
  const age = await cli(['dead-letters', 'list', '--older-than', '1h'], amqp())
  expect(age.code).toBe(1)
  expect(age.stderr).toContain('the broker does not tell when these messages were dead-lettered')
  const doctor = await cli(['doctor'], amqp())
  expect(doctor.stdout).toContain(`dead letter queue:  ${amqpDlq}`)
  expect(doctor.stdout).toContain(`! 1 dead letter(s) in queue ${amqpDlq}`)
  expect(doctor.stdout).toContain(`then the message goes to the dead-letter queue '${amqpDlq}'`)
  expect(doctor.code).toBe(0)

  fs.unlinkSync(failFile)
  const re = await cli(['dead-letters', 'redeliver', '--json', '--topic', `opsdl${run}.*`], amqp())
  expect(JSON.parse(re.stdout)).toMatchObject({ selected: 1, redelivered: 1 })
  await until(() => got(rx).length === 1, 15000, 'the redelivered message')
  expect(got(rx)[0]).toMatchObject({ topic, data: { n: 1 }, headers: { 'x-keep': 'me' } })
  expect(await list(amqp())).toEqual([])

  fs.writeFileSync(failFile, '')
  await cli(['send', topic, '{"n":2}'], amqp())
  await until(async () => (await list(amqp())).length === 1, 20000, 'the second dead letter')
  const [second] = await list(amqp())
  const purge = await cli(['dead-letters', 'purge', second.id], amqp())
  expect(purge.stdout).toContain(`purged 1 of 1 selected dead letter(s) from queue ${amqpDlq}`)
  expect(await list(amqp())).toEqual([])
  expect(got(rx)).toHaveLength(1)
  await rx.stop()
}, 90000)

test('AMQP without a dead-letter queue: doctor and dead-letters say so, and what to set', async () => {
  const conf = amqp({ queue: { name: `opsdl.none.${run}` } })
  const r = await cli(['dead-letters', 'list'], conf)
  expect(r.code).toBe(1)
  expect(r.stderr).toContain(`queue 'opsdl.none.${run}' has no dead-letter queue configured (without one RabbitMQ drops rejected messages): set queue.deadLetterQueue`)
  const rx = app('receive', conf, { topics: [`opsdl${run}.none`] })
  await until(() => rx.output().includes(`queue 'opsdl.none.${run}' is bound to`), 30000, 'queue created')
  await rx.stop()
  const doctor = await cli(['doctor'], conf)
  expect(doctor.stdout).toMatch(/dead letter queue: +none: not configured \(without one RabbitMQ drops rejected messages\)/)
  expect(doctor.code).toBe(0)
}, 60000)
