'use strict'
// The CLI against the shared Mosquitto and RabbitMQ: doctor (good, wrong password, closed port),
// MQTT tail next to a receiving app, send. The MQTT wrong password runs against a private Mosquitto
// with a password file.
const { deleteQueues, ensureRabbit } = require('./amqp-helpers')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { until, freePort, tmpDir } = require('./helpers')
const { cli, app, cliChild, killAll } = require('./ops-helpers')
const { startMosquitto } = require('./mosquitto')

const run = `${process.pid}${Math.random().toString(36).slice(2, 6)}`
const mqtt = (extra = {}) => ({ kind: 'native-mqtt-messaging', url: 'mqtt://127.0.0.1:1883', queue: `ops-${run}`, retryDelay: 20, ...extra })
const amqp = (extra = {}) => ({ kind: 'native-amqp-messaging', url: 'amqp://guest:guest@127.0.0.1:5672', queue: `ops.${run}`, ...extra })
const got = p => p.lines().filter(l => l.got).map(l => l.got)

afterAll(() => {
  killAll()
  // The queues the receiving apps created (durable, on the shared broker).
  deleteQueues([`ops.${run}`, `ops.missing.${run}`])
})

// RabbitMQ with its AMQP 1.0 plugin (enabled if it is not): the AMQP tests must not depend on a suite run before.
beforeAll(ensureRabbit, 150000)

test('MQTT doctor: green on Mosquitto (connect with a client id of its own), red on a closed port', async () => {
  const r = await cli(['doctor'], mqtt())
  expect(r.stdout).toMatch(/broker: .*127\.0\.0\.1:1883/)
  expect(r.stdout).toMatch(/contract: +at-least-once/)
  expect(r.stdout).toContain('✔ ok')
  expect(r.code).toBe(0)
  const port = await freePort()
  const bad = await cli(['doctor'], mqtt({ url: `mqtt://127.0.0.1:${port}` }))
  expect(bad.code).toBe(1)
  expect(bad.stdout).toContain('✘ cannot connect to')
})

test('MQTT doctor: red on a wrong password (private Mosquitto with a password file), green with the right one', async () => {
  const dir = tmpDir('ops-mosquitto-auth')
  const passwords = path.join(dir, 'passwords')
  execFileSync('mosquitto_passwd', ['-b', '-c', passwords, 'ops-user', 'right-secret'])
  fs.chmodSync(passwords, 0o644) // readable by the broker after it dropped privileges
  const broker = await startMosquitto({ extra: ['allow_anonymous false', `password_file ${passwords}`] })
  try {
    const url = `mqtt://127.0.0.1:${broker.port}`
    const wrong = await cli(['doctor'], mqtt({ url, username: 'ops-user', password: 'wrong-secret' }))
    expect(wrong.code).toBe(1)
    expect(wrong.stdout).toMatch(/✘ cannot connect to inspector mqtt:\/\/127\.0\.0\.1:\d+ as '[^']+': .*(user name or password|not authori[sz]ed)/i)
    expect(wrong.stdout).toContain('→ check username and password')
    expect(wrong.stdout + wrong.stderr).not.toContain('wrong-secret')
    const none = await cli(['doctor'], mqtt({ url }))
    expect(none.code).toBe(1)
    expect(none.stdout).toContain('→ check username and password')
    const ok = await cli(['doctor'], mqtt({ url, username: 'ops-user', password: 'right-secret' }))
    expect(ok.stdout).toContain('✔ ok')
    expect(ok.code).toBe(0)
  } finally {
    await broker.stop()
  }
})

test('MQTT: tail (clean session of its own) sees the messages the app receives; send arrives', async () => {
  const topic = `ops${run}/t`
  const rx = app('receive', mqtt(), { topics: [topic] })
  await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
  const tail = cliChild(['tail', '--json', `ops${run}/*`], mqtt())
  await until(() => tail.stderr().includes('listening'), 15000, 'tail listening')
  await new Promise(r => setTimeout(r, 300)) // the SUBACK
  for (let i = 0; i < 2; i++) expect((await cli(['send', topic, JSON.stringify({ i }), '-H', 'h=1'], mqtt())).code).toBe(0)
  await until(() => got(rx).length === 2, 20000, 'app received 2')
  await until(() => tail.lines().length === 2, 10000, 'tail saw 2')
  expect(tail.lines().map(l => l.payload.data.i).sort()).toEqual([0, 1])
  expect(got(rx)[0].headers).toMatchObject({ h: '1' })
  await tail.stop()
  await rx.stop()
})

test('AMQP doctor: red on a wrong password and on a closed port (green: see the missing-queue test)', async () => {
  const wrong = await cli(['doctor'], amqp({ url: 'amqp://guest:not-the-password@127.0.0.1:5672' }))
  expect(wrong.code).toBe(1)
  expect(wrong.stdout + wrong.stderr).not.toContain('not-the-password')
  expect(wrong.stdout).toContain('→ check user and password')
  const port = await freePort()
  const closed = await cli(['doctor'], amqp({ url: `amqp://guest:guest@127.0.0.1:${port}` }))
  expect(closed.code).toBe(1)
  expect(closed.stdout).toContain('→ check the url and that the broker runs')
})

test('AMQP (RabbitMQ): tail on a temporary queue of its own sees the messages the app receives; send arrives', async () => {
  const topic = `ops${run}.amqp`
  const rx = app('receive', amqp(), { topics: [topic] })
  await until(() => rx.lines().some(l => l.ready), 30000, 'receiver ready')
  const tail = cliChild(['tail', '--json', `ops${run}.*`], amqp())
  await until(() => tail.stderr().includes('listening'), 15000, 'tail listening')
  for (let i = 0; i < 2; i++) expect((await cli(['send', topic, JSON.stringify({ i }), '-H', 'h=2'], amqp())).code).toBe(0)
  await until(() => got(rx).length === 2, 20000, 'app received 2')
  await until(() => tail.lines().length === 2, 10000, 'tail saw 2')
  expect(tail.lines().map(l => [l.topic, l.payload.data.i]).sort()).toEqual([[topic, 0], [topic, 1]])
  expect(got(rx)[0].headers).toMatchObject({ h: '2' })
  await tail.stop()
  await rx.stop()
})

test('AMQP doctor: red on a missing queue, green once the app created it', async () => {
  const queue = `ops.missing.${run}`
  const r = await cli(['doctor'], amqp({ queue }))
  expect(r.code).toBe(1)
  expect(r.stdout).toContain(`✘ queue '${queue}' cannot be consumed`)
  const rx = app('receive', amqp({ queue }), { topics: [`ops${run}.q`] })
  // (ready comes with startListening; the queue is declared right after, in the background)
  await until(() => rx.output().includes(`queue '${queue}' is bound to`), 30000, 'queue created')
  await rx.stop()
  const ok = await cli(['doctor'], amqp({ queue }))
  expect(ok.stdout).toMatch(/contract: +at-least-once/)
  expect(ok.stdout).toContain('✔ ok')
  expect(ok.code).toBe(0)
})
