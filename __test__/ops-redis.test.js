'use strict'
// The CLI against Redis (streams and pub/sub) on the shared broker and on private instances.
const fs = require('node:fs')
const path = require('node:path')
const { tmpDir, until, freePort } = require('./helpers')
const { privateRedis, rawClient } = require('./redis-helpers')
const { cli, app, cliChild, killAll } = require('./ops-helpers')

const run = `${process.pid}${Math.random().toString(36).slice(2, 6)}`
const prefix = `ops${run}:`
const queue = `q${run}`
const streams = (extra = {}) => ({ kind: 'native-redis-messaging', mode: 'streams', url: 'redis://127.0.0.1:6379', streamPrefix: prefix, queue, retryDelay: 20, block: 200, ...extra })
const pubsub = (extra = {}) => ({ kind: 'native-redis-messaging', url: 'redis://127.0.0.1:6379', ...extra })
const got = p => p.lines().filter(l => l.got).map(l => l.got)
const dir = tmpDir('ops-redis')

let redis
beforeAll(async () => {
  redis = await rawClient()
})
afterAll(async () => {
  killAll()
  const keys = []
  for await (const k of redis.scanIterator({ MATCH: `${prefix}*` })) keys.push(k)
  if (keys.length) await redis.del(keys)
  await redis.quit()
})

test('doctor: green on the shared Redis, with the broker version and the contract line', async () => {
  const r = await cli(['doctor'], streams())
  expect(r.stdout).toContain('address:            127.0.0.1:6379')
  expect(r.stdout).toMatch(/broker: +(Redis|Valkey) \d+\.\d+/)
  expect(r.stdout).toMatch(/contract: +at-least-once/)
  expect(r.code).toBe(0)
})

test('doctor: red on a wrong password (private Redis with requirepass)', async () => {
  const priv = await privateRedis('ops-auth', { password: 'right-one' })
  try {
    const r = await cli(['doctor'], streams({ url: `redis://:wrong-one@127.0.0.1:${priv.port}` }))
    expect(r.code).toBe(1)
    expect(r.stdout).toMatch(/✘ cannot connect to Redis at 127\.0\.0\.1:\d+/)
    expect(r.stdout).toContain('authentication failed: check the password')
    expect(r.stdout + r.stderr).not.toContain('wrong-one')
    const ok = await cli(['doctor'], streams({ url: priv.url }))
    expect(ok.code).toBe(0)
  } finally {
    await priv.stop()
  }
})

test('doctor: red on a closed port', async () => {
  const port = await freePort()
  const r = await cli(['doctor'], pubsub({ url: `redis://127.0.0.1:${port}` }))
  expect(r.code).toBe(1)
  expect(r.stdout).toContain('nothing listens there')
})

test('doctor: red on a missing queue (consumer group) of a named topic', async () => {
  await redis.xAdd(`${prefix}nogroup`, '*', { payload: '{"data":1}' })
  const r = await cli(['doctor', '--topic', 'nogroup'], streams())
  expect(r.code).toBe(1)
  expect(r.stdout).toContain(`consumer group (queue) '${queue}' does not exist on stream ${prefix}nogroup`)
  expect(r.stdout).toContain('→ start the app (it creates the group)')
})

test('streams: tail (XREAD, no group) sees every message while the app receives every one; send arrives', async () => {
  const rx = app('receive', streams(), { topics: ['tailed'] })
  await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
  const tail = cliChild(['tail', '--json'], streams())
  await until(() => tail.stderr().includes('listening'), 15000, 'tail listening')
  for (let i = 0; i < 3; i++) {
    const r = await cli(['send', 'tailed', JSON.stringify({ i }), '-H', `n=${i}`], streams())
    expect(r.code).toBe(0)
  }
  await until(() => got(rx).length === 3, 20000, 'app received 3')
  await until(() => tail.lines().length === 3, 10000, 'tail saw 3')
  expect(tail.lines().map(l => [l.topic, l.payload.data.i]).sort()).toEqual([['tailed', 0], ['tailed', 1], ['tailed', 2]])
  expect(got(rx).map(g => [g.data.i, g.headers.n]).sort()).toEqual([[0, '0'], [1, '1'], [2, '2']])
  // the tail created no consumer group
  const groups = await redis.xInfoGroups(`${prefix}tailed`)
  expect(groups.map(g => g.name)).toEqual([queue])
  await tail.stop()
  await rx.stop()
})

test('streams: dead-letters list, show, redeliver to a fixed handler (with headers), purge', async () => {
  const failFile = path.join(dir, 'broken')
  fs.writeFileSync(failFile, '')
  const rx = app('receive', streams({ maxAttempts: 1 }), { topics: ['dl'], failFile })
  await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
  await cli(['send', 'dl', '{"n":1}', '-H', 'x-keep=me'], streams())
  const dead = `${prefix}${queue}:dead-letter`
  await until(async () => (await redis.xLen(dead).catch(() => 0)) === 1, 15000, 'dead letter')
  const entries = JSON.parse((await cli(['dead-letters', 'list', '--json'], streams())).stdout)
  expect(entries).toHaveLength(1)
  expect(entries[0]).toMatchObject({ topic: 'dl', stream: `${prefix}dl`, attempts: 1 })
  expect(entries[0].error).toContain('failing while')
  const show = await cli(['dead-letters', 'show', entries[0].id], streams())
  expect(show.stdout).toContain('"x-keep": "me"')
  expect(JSON.parse((await cli(['dead-letters', 'list', '--json', '--older-than', '1h'], streams())).stdout)).toEqual([])

  fs.unlinkSync(failFile)
  const re = await cli(['dead-letters', 'redeliver', '--json', '--older-than', '0s'], streams())
  expect(JSON.parse(re.stdout)).toMatchObject({ selected: 1, redelivered: 1 })
  await until(() => got(rx).length === 1, 15000, 'redelivered message')
  expect(got(rx)[0]).toMatchObject({ topic: 'dl', data: { n: 1 }, headers: { 'x-keep': 'me' } })
  expect(await redis.xLen(dead)).toBe(0)

  await redis.xAdd(dead, '*', { topic: 'dl', payload: '{"data":2}', stream: `${prefix}dl` })
  const purge = await cli(['dead-letters', 'purge', '--topic', 'dl'], streams())
  expect(purge.stdout).toContain(`purged 1 of 1 selected dead letter(s) from stream ${dead}`)
  expect(await redis.xLen(dead)).toBe(0)
  await rx.stop()
})

test('pub/sub: tail has a subscription of its own; the app receives every message', async () => {
  const topic = `ops${run}.ps`
  const rx = app('receive', pubsub(), { topics: [topic] })
  await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
  const tail = cliChild(['tail', '--json', `ops${run}.*`], pubsub())
  await until(() => tail.stderr().includes('listening'), 15000, 'tail listening')
  await cli(['send', topic, '{"i":1}'], pubsub())
  await cli(['send', `other${run}`, '{"i":2}'], pubsub())
  await until(() => got(rx).length === 1, 15000, 'app received')
  await until(() => tail.lines().length === 1, 10000, 'tail saw it')
  expect(tail.lines()[0]).toMatchObject({ topic, payload: { data: { i: 1 } } })
  const dl = await cli(['dead-letters', 'list'], pubsub())
  expect(dl.code).toBe(1)
  expect(dl.stderr).toContain("keeps dead letters in the app's memory")
  await tail.stop()
  await rx.stop()
})

test('streams: W3C trace context survives the wire; the consumer span in another process is a child of the emitting span', async () => {
  const otel = { extraEnv: { OTEL: '1' } }
  const rx = app('receive', streams(), { topics: ['traced'] }, otel)
  await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
  const tx = app('emit', streams(), { topic: 'traced', data: { x: 1 } }, otel)
  expect(await tx.exited).toBe(0)
  const { emitted } = tx.lines().find(l => l.emitted)
  await until(() => rx.lines().some(l => l.spans?.length), 15000, 'consumer span')
  const span = rx.lines().find(l => l.spans?.length).spans[0]
  expect(span).toMatchObject({
    traceId: emitted.traceId,
    parentSpanId: emitted.spanId,
    attributes: { 'messaging.system': 'redis', 'messaging.destination.name': 'traced' }
  })
  await rx.stop()
})

test('stats count reconnects: a receiver whose Redis restarts', async () => {
  const priv = await privateRedis('ops-reconnect')
  try {
    const conf = streams({ url: priv.url, reconnectDelay: 50, maxReconnectDelay: 200 })
    const rx = app('receive', conf, { topics: ['rc'] })
    await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
    await cli(['send', 'rc', '{"n":1}'], conf)
    await until(() => got(rx).length === 1, 15000, 'first message')
    expect(rx.lines().find(l => l.got).stats).toMatchObject({ reconnects: 0, acked: 0, delivered: 1 })
    await priv.restart()
    await until(async () => (await cli(['send', 'rc', '{"n":2}'], conf)).code === 0, 20000, 'send after the restart')
    await until(() => got(rx).length >= 2, 20000, 'message after the restart')
    const { stats } = rx.lines().filter(l => l.got).pop()
    expect(stats.reconnects).toBeGreaterThanOrEqual(1)
    expect(stats.acked).toBeGreaterThanOrEqual(1)
    await rx.stop()
  } finally {
    await priv.stop()
  }
})
