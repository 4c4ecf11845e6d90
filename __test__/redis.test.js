'use strict'
// native-redis-messaging in pub/sub mode inside one CAP app (cds.test), against the shared Redis.
const run = `t${process.pid}-${Date.now().toString(36)}`
process.env.CDS_CONFIG = JSON.stringify({
  requires: {
    messaging: {
      kind: 'native-redis-messaging',
      credentials: { uri: 'redis://127.0.0.1:6379' },
      publishPrefix: `${run}/`,
      subscribePrefix: `${run}/`,
      maxAttempts: 3,
      retryDelay: 20,
      forceListening: true
    }
  }
})
const path = require('node:path')
const cds = require('@sap/cds')
const { createClient } = require('redis')
const { sharedTests } = require('./suite')
const { assertBroker, until } = require('./helpers')

describe('native-redis-messaging (pub/sub)', () => {
  const t = cds.test(path.join(__dirname, 'apps', 'reviews'))
  const log = cds.test.log()
  const ctx = {
    kind: 'native-redis-messaging',
    extra: { credentials: { uri: 'redis://127.0.0.1:6379' } },
    POST: (...a) => t.POST(...a)
  }
  let raw
  beforeAll(async () => {
    await assertBroker('Redis', 6379, 'redis-server --port 6379 --daemonize yes')
    ctx.messaging = await cds.connect.to('messaging')
    raw = createClient({ url: 'redis://127.0.0.1:6379' })
    await raw.connect()
  })
  afterAll(async () => {
    await raw?.quit()
  })

  test('is our kind, and its guarantee (logged at startup) is honest: at-most-once', () => {
    expect(ctx.messaging.constructor.name).toBe('NativeRedisMessaging')
    const g = ctx.messaging._engine.guarantee()
    expect(g.delivery).toBe('at-most-once')
    expect(g.summary).toMatch(/^at-most-once via Redis pub\/sub at 127\.0\.0\.1:6379/)
    expect(g.summary).toMatch(/a consumer that is down or reconnecting misses messages/)
  })

  sharedTests(ctx)

  test('wire format: PUBLISH <prefixed topic> {"data":…, …headers}', async () => {
    const sub = raw.duplicate()
    await sub.connect()
    const got = []
    await sub.subscribe(`${run}/wire`, m => got.push(m))
    await ctx.messaging.emit('wire', { a: 1 }, { 'x-h': 'v' })
    await until(() => got.length === 1, 5000, 'the raw message')
    expect(JSON.parse(got[0])).toEqual({ data: { a: 1 }, 'x-h': 'v' })
    await sub.quit()
  })

  test('inbound: a payload without `data` is the data; with `data` the rest are headers', async () => {
    const seen = []
    ctx.messaging.on('raw.in', msg => seen.push({ data: msg.data, headers: msg.headers }))
    await ctx.messaging.emit('raw.sync', {}) // subscriptions before this emit are active now
    await raw.publish(`${run}/raw.in`, JSON.stringify({ data: { x: 1 }, h1: 'a' }))
    await raw.publish(`${run}/raw.in`, JSON.stringify({ plain: true }))
    await raw.publish(`${run}/raw.in`, '42')
    await until(() => seen.length === 3, 5000, 'three deliveries')
    expect(seen[0]).toEqual({ data: { x: 1 }, headers: { h1: 'a' } })
    expect(seen[1]).toEqual({ data: { plain: true }, headers: {} })
    expect(seen[2]).toEqual({ data: 42, headers: {} })
  })

  test('bad input: a non-JSON payload logs an error with the topic, and the service keeps running', async () => {
    const seen = []
    ctx.messaging.on('bad.input', msg => seen.push(msg.data))
    await ctx.messaging.emit('bad.sync', {})
    await raw.publish(`${run}/bad.input`, 'this is {not json')
    await raw.publish(`${run}/bad.input`, JSON.stringify({ data: 'fine' }))
    await until(() => seen.length === 1, 5000, 'the valid message')
    expect(seen).toEqual(['fine'])
    await until(() => log.output.includes(`message on topic '${run}/bad.input' is not valid`), 5000, 'the error line')
  })

  test('handler always throws: dead-lettered in memory after maxAttempts, with an error line', async () => {
    let calls = 0
    ctx.messaging.on('poison', () => {
      calls++
      throw new Error('cannot process')
    })
    await ctx.messaging.emit('poison', { id: 1 })
    await until(() => ctx.messaging.deadLetters().some(d => d.topic === `${run}/poison`), 5000, 'the dead letter')
    expect(calls).toBe(3)
    await until(() => /message on topic '.*\/poison' failed 3 time\(s\)/.test(log.output), 5000, 'the log line')
  })

  test("on('*') with forceListening uses PSUBSCRIBE and receives any channel", async () => {
    const seen = []
    ctx.messaging.on('*', msg => seen.push(msg.event))
    await until(async () => (await raw.sendCommand(['PUBSUB', 'NUMPAT'])) > 0, 5000, 'the pattern subscription')
    await raw.publish(`${run}/never.subscribed`, JSON.stringify({ data: 1 }))
    await until(() => seen.includes(`${run}/never.subscribed`), 5000, 'the wildcard delivery')
  })

  test('credentials: bad URL fails with INVALID_CONFIG and never shows the password', async () => {
    const err = await cds.connect.to({ kind: 'native-redis-messaging', credentials: { uri: 'http://:pw-123@host' } }).catch(e => e)
    expect(err.code).toBe('INVALID_CONFIG')
    expect(err.message).not.toMatch(/pw-123/)
    const err2 = await cds.connect.to({ kind: 'native-redis-messaging', mode: 'queue' }).catch(e => e)
    expect(err2.code).toBe('INVALID_CONFIG')
  })

  test('an unreachable Redis: emit fails with CONNECTION_FAILED within connectTimeout, without the password', async () => {
    const srv = await cds.connect.to({ kind: 'native-redis-messaging', credentials: { uri: 'redis://user:pw-456@127.0.0.1:1' }, connectTimeout: 300 })
    const t0 = Date.now()
    const err = await srv.emit('x', {}).catch(e => e)
    expect(err.code).toBe('CONNECTION_FAILED')
    expect(err.message).toMatch(/127\.0\.0\.1:1/)
    expect(err.message).not.toMatch(/pw-456/)
    expect(Date.now() - t0).toBeLessThan(3000)
    await srv.disconnect()
  })
})
