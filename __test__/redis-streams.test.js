'use strict'
// native-redis-messaging in streams mode inside one CAP app (cds.test), against the shared Redis.
const run = `t${process.pid}-${Date.now().toString(36)}`
const prefix = `${run}:`
const queue = `reviews-${run}`
process.env.CDS_CONFIG = JSON.stringify({
  requires: {
    messaging: {
      kind: 'native-redis-messaging',
      mode: 'streams',
      credentials: { uri: 'redis://127.0.0.1:6379' },
      streamPrefix: prefix,
      queue: { name: queue },
      maxAttempts: 3,
      retryDelay: 20,
      block: 200,
      forceListening: true
    }
  }
})
const path = require('node:path')
const cds = require('@sap/cds')
const { createClient } = require('redis')
const { sharedTests } = require('./suite')
const { assertBroker, until } = require('./helpers')

describe('native-redis-messaging (streams)', () => {
  const t = cds.test(path.join(__dirname, 'apps', 'reviews'))
  const log = cds.test.log()
  const ctx = {
    kind: 'native-redis-messaging',
    extra: { mode: 'streams', streamPrefix: prefix, queue: `${queue}-other` },
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
    if (raw) {
      const keys = await raw.keys(`${run}:*`)
      if (keys.length) await raw.del(keys)
      await raw.quit()
    }
  })

  test('is our kind, with an at-least-once guarantee naming group and dead-letter stream', () => {
    expect(ctx.messaging.constructor.name).toBe('NativeRedisMessaging')
    const g = ctx.messaging._engine.guarantee()
    expect(g.delivery).toBe('at-least-once')
    expect(g.deadLetter).toBe(`${prefix}${queue}:dead-letter`)
    expect(g.summary).toMatch(new RegExp(`consumer group '${queue}'`))
  })

  sharedTests(ctx)

  test('wire format: XADD <prefix><topic> * payload {"data":…, …headers}; acknowledged after processing', async () => {
    const seen = []
    ctx.messaging.on('wire', msg => seen.push(msg))
    await ctx.messaging.emit('wire', { a: 1 }, { 'x-h': 'v' })
    await until(() => seen.length === 1, 5000, 'the delivery')
    const entries = await raw.xRange(`${prefix}wire`, '-', '+')
    expect(entries).toHaveLength(1)
    expect(JSON.parse(entries[0].message.payload)).toEqual({ data: { a: 1 }, 'x-h': 'v' })
    expect(seen[0].headers).toMatchObject({ 'x-h': 'v' })
    await until(async () => (await raw.xPending(`${prefix}wire`, queue)).pending === 0, 5000, 'the XACK')
  })

  test('entries written by other producers are consumed (whole payload is data without a data property)', async () => {
    const seen = []
    ctx.messaging.on('foreign', msg => seen.push(msg.data))
    await ctx.messaging.emit('foreign.sync', {}) // the group of 'foreign' exists once this resolves
    await raw.xAdd(`${prefix}foreign`, '*', { payload: JSON.stringify({ plain: 1 }) })
    await raw.xAdd(`${prefix}foreign`, '*', { a: 'x', b: '2' })
    await until(() => seen.length === 2, 5000, 'both entries')
    expect(seen).toEqual([{ plain: 1 }, { a: 'x', b: '2' }])
  })

  test('handler always throws: after maxAttempts the entry is in the dead-letter stream with the error text', async () => {
    let calls = 0
    ctx.messaging.on('poison', () => {
      calls++
      throw new Error('cannot process')
    })
    await ctx.messaging.emit('poison', { id: 42 })
    const dlq = `${prefix}${queue}:dead-letter`
    const dead = await until(async () => (await raw.xRange(dlq, '-', '+')).find(e => e.message.topic === 'poison'), 10000, 'the dead letter')
    expect(calls).toBe(3)
    expect(dead.message).toMatchObject({ error: 'cannot process', attempts: '3', stream: `${prefix}poison`, group: queue })
    expect(JSON.parse(dead.message.payload)).toEqual({ data: { id: 42 } })
    expect((await raw.xPending(`${prefix}poison`, queue)).pending).toBe(0)
    await until(() => /message on topic 'poison' failed 3 time\(s\)/.test(log.output), 5000, 'the log line')
  })

  test('bad input: a non-JSON entry is dead-lettered at once with an error line naming the topic', async () => {
    const seen = []
    ctx.messaging.on('bad.input', msg => seen.push(msg.data))
    await ctx.messaging.emit('bad.sync', {})
    await raw.xAdd(`${prefix}bad.input`, '*', { payload: 'this is {not json' })
    await ctx.messaging.emit('bad.input', 'fine')
    await until(() => seen.length === 1, 5000, 'the valid message')
    expect(seen).toEqual(['fine'])
    await until(() => log.output.includes("message on topic 'bad.input' is not valid"), 5000, 'the error line')
    const dlq = `${prefix}${queue}:dead-letter`
    await until(async () => (await raw.xRange(dlq, '-', '+')).some(e => e.message.topic === 'bad.input'), 5000, 'the dead letter')
  })

  test("on('*') with forceListening consumes streams under the prefix, also ones that appear later", async () => {
    const seen = []
    ctx.messaging.on('*', msg => seen.push(msg.event))
    await new Promise(r => setTimeout(r, 1500)) // the streams under the prefix have been listed
    await raw.xAdd(`${prefix}never.subscribed`, '*', { payload: JSON.stringify({ data: 1 }) })
    await until(() => seen.includes('never.subscribed'), 10000, 'the wildcard delivery')
  })

  test('a message Redis refuses fails alone (WRONGTYPE → NO_ROUTE); the others of the same batch are stored', async () => {
    await raw.set(`${prefix}not.a.stream`, 'x')
    const [bad, good] = await Promise.allSettled([ctx.messaging.emit('not.a.stream', {}), ctx.messaging.emit('a.stream', { ok: 1 })])
    expect(bad.status).toBe('rejected')
    expect(bad.reason.code).toBe('NO_ROUTE')
    expect(bad.reason.message).toMatch(/WRONGTYPE/)
    expect(good.status).toBe('fulfilled')
    expect(await raw.xLen(`${prefix}a.stream`)).toBe(1)
  })

  test('maxLen trims the stream (XADD MAXLEN ~)', async () => {
    const srv = await cds.connect.to({ kind: 'native-redis-messaging', mode: 'streams', streamPrefix: prefix, queue: `${queue}-trim`, maxLen: 100 })
    for (let k = 0; k < 10; k++) await Promise.all(Array.from({ length: 100 }, (_, i) => srv.emit('trimmed', { i })))
    const len = await raw.xLen(`${prefix}trimmed`)
    expect(len).toBeGreaterThanOrEqual(100)
    expect(len).toBeLessThan(1000)
    await srv.disconnect()
  })

  test('invalid streams options fail with INVALID_CONFIG', async () => {
    for (const bad of [{ readCount: 0 }, { claimAfter: 5 }, { maxLen: 0 }, { queue: { name: '' } }, { streamPrefix: 5 }]) {
      const err = await cds.connect.to({ kind: 'native-redis-messaging', mode: 'streams', ...bad }).catch(e => e)
      expect(err.code).toBe('INVALID_CONFIG')
    }
  })
})
