'use strict'
// Behaviour every native kind shares, run against a CAP app started with cds.test.
const cds = require('@sap/cds')
const { until } = require('./helpers')

/**
 * Registers the shared tests. `ctx.settled(fn)` waits until fn() is truthy (a broker kind delivers
 * asynchronously; the local kind already delivered when emit resolved).
 */
function sharedTests(ctx) {
  const messaging = () => ctx.messaging

  test('emit(event, data, headers): the handler sees the same msg shape as with @sap/cds kinds', async () => {
    const seen = []
    messaging().on('shape', msg => {
      seen.push({ event: msg.event, data: msg.data, headers: msg.headers, inbound: msg.inbound, user: cds.context.user })
    })
    await messaging().emit('shape', { ID: 1 }, { 'x-custom': 'h' })
    await until(() => seen.length === 1, 10000, 'delivery')
    expect(seen[0]).toMatchObject({ event: 'shape', data: { ID: 1 }, headers: { 'x-custom': 'h' }, inbound: true })
    expect(seen[0].user).toBe(cds.User.privileged)
  })

  test('emit({event, data, headers})', async () => {
    const seen = []
    messaging().on('objectForm', msg => seen.push(msg))
    await messaging().emit({ event: 'objectForm', data: { a: 1 }, headers: { b: 2 } })
    await until(() => seen.length === 1, 10000, 'delivery')
    expect(seen[0].data).toEqual({ a: 1 })
    expect(seen[0].headers).toMatchObject({ b: 2 })
  })

  test('on([a, b]) subscribes to both topics', async () => {
    const seen = []
    messaging().on(['multiA', 'multiB'], msg => seen.push(msg.event))
    await messaging().emit('multiA', {})
    await messaging().emit('multiB', {})
    await until(() => seen.length === 2, 10000, 'both deliveries')
    expect(seen.sort()).toEqual(['multiA', 'multiB'])
  })

  test('a declared event of a served service reaches messaging handlers', async () => {
    const seen = []
    messaging().on('ReviewsService.reviewed', msg => seen.push(msg.data))
    const { data } = await ctx.POST('/odata/v4/reviews/review', { subject: 'book-1', rating: 5 })
    expect(data.value).toBe('ok')
    await until(() => seen.length === 1, 10000, 'the declared event')
    expect(seen[0]).toEqual({ subject: 'book-1', rating: 5 })
  })

  test('handler throws once: the message comes back and is processed', async () => {
    let calls = 0
    const processed = []
    messaging().on('flaky', msg => {
      calls++
      if (calls === 1) throw new Error('temporary failure')
      processed.push(msg.data.n)
    })
    await messaging().emit('flaky', { n: 7 })
    await until(() => processed.length === 1, 10000, 'redelivery')
    expect(calls).toBe(2)
    expect(processed).toEqual([7])
  })

  test('many messages in flight are all delivered once', async () => {
    const seen = new Map()
    messaging().on('bulk', msg => seen.set(msg.data.i, (seen.get(msg.data.i) || 0) + 1))
    await Promise.all(Array.from({ length: 500 }, (_, i) => messaging().emit('bulk', { i })))
    await until(() => seen.size === 500, 20000, '500 deliveries')
    expect([...seen.values()].every(c => c === 1)).toBe(true)
  })

  test('invalid option values fail with INVALID_CONFIG and the app keeps running', async () => {
    for (const bad of [{ maxAttempts: 0 }, { maxAttempts: 'often' }, { retryDelay: -5 }, { maxInFlight: 1.5 }]) {
      const err = await cds.connect.to({ kind: ctx.kind, ...ctx.extra, ...bad }).catch(e => e)
      expect(err).toBeInstanceOf(Error)
      expect(err.code).toBe('INVALID_CONFIG')
      expect(err.message).toMatch(/maxAttempts|retryDelay|maxInFlight/)
    }
    // the running service still works
    const seen = []
    messaging().on('afterBadConfig', () => seen.push(1))
    await messaging().emit('afterBadConfig', {})
    await until(() => seen.length === 1, 10000, 'delivery')
  })
}

module.exports = { sharedTests }
