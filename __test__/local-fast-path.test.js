'use strict'
// The local kind's in-process first attempt (issue #16, lib/in-process.js): an emit is delivered
// to the handlers without crossing into the engine; the engine takes over only what failed. These
// tests pin the broker semantics that must not change with it.
const cds = require('@sap/cds')

let seq = 0
const local = (extra = {}) => cds.connect.to(`fast-${process.pid}-${++seq}`, { kind: 'native-local-messaging', maxAttempts: 3, retryDelay: 5, maxRetryDelay: 20, ...extra })

describe('native-local-messaging: first attempt in-process', () => {
  test('a handler that fails once is redelivered by the engine (attempt 2) and the emit resolves', async () => {
    const m = await local()
    const attempts = []
    m.onFailure((err, msg, info) => {
      attempts.push(info.attempt)
    })
    let calls = 0
    m.on('flaky', () => {
      if (++calls === 1) throw new Error('first time fails')
    })
    await m.emit('flaky', { x: 1 })
    expect(calls).toBe(2)
    expect(attempts).toEqual([1])
    const s = m.stats()
    expect(s).toMatchObject({ emitted: 1, delivered: 2, acked: 1, redelivered: 1, deadLettered: 0, inFlight: 0 })
    await m.disconnect()
  })

  test('every attempt counts: maxAttempts deliveries, one dead letter with the attempt count, the emit rejects', async () => {
    const m = await local({ maxAttempts: 2 })
    let calls = 0
    m.on('always', () => {
      calls++
      throw Object.assign(new Error('always fails'), { code: 'NOPE' })
    })
    const err = await m.emit('always', { id: 7 }).catch(e => e)
    expect(err.code).toBe('HANDLER_FAILED')
    expect(err.message).toMatch(/failed 2 time\(s\) \(code NOPE\): always fails/)
    expect(calls).toBe(2)
    const dead = m.deadLetters().filter(d => d.topic === 'always')
    expect(dead).toHaveLength(1)
    expect(dead[0]).toMatchObject({ attempts: 2, error: 'always fails' })
    expect(JSON.parse(dead[0].payload).data).toEqual({ id: 7 })
    expect(m.stats()).toMatchObject({ emitFailures: 1, delivered: 2, redelivered: 1, deadLettered: 1, inFlight: 0 })
    await m.disconnect()
  })

  test('an unrecoverable first attempt is dead-lettered at once (attempt 1)', async () => {
    const m = await local()
    let calls = 0
    m.on('fatal', () => {
      calls++
      throw Object.assign(new Error('never'), { unrecoverable: true })
    })
    const err = await m.emit('fatal', {}).catch(e => e)
    expect(err.code).toBe('HANDLER_FAILED')
    expect(calls).toBe(1)
    expect(m.deadLetters().filter(d => d.topic === 'fatal')).toMatchObject([{ attempts: 1, error: 'never' }])
    await m.disconnect()
  })

  test('receivers get inbound: true and their own copy of the data', async () => {
    const m = await local()
    let got
    m.on('copy', msg => {
      got = { inbound: msg.inbound, data: msg.data }
      msg.data.changed = true
    })
    const data = { a: 1 }
    await m.emit('copy', data)
    expect(got).toEqual({ inbound: true, data: { a: 1, changed: true } })
    expect(data).toEqual({ a: 1 })
    await m.disconnect()
  })

  test("the handlers run in their own context: the emitter's cds.context is not changed", async () => {
    const m = await local()
    let inHandler
    m.on('ctx', () => {
      inHandler = cds.context
    })
    await cds.tx({ user: new cds.User('emitter'), tenant: 't-emitter' }, async () => {
      const mine = cds.context
      const model = mine.model
      await m.emit('ctx', {})
      expect(cds.context).toBe(mine)
      expect(mine.model).toBe(model)
      expect(inHandler).not.toBe(mine)
      expect(inHandler.id).not.toBe(mine.id)
      expect(inHandler.tenant).not.toBe('t-emitter')
      expect(inHandler.user.id).not.toBe('emitter')
    })
    // an emitter without a context does not get the one processInboundMsg creates
    await (async () => {
      expect(cds.context).toBeUndefined()
      await m.emit('ctx', {})
      expect(cds.context).toBeUndefined()
    })()
    await m.disconnect()
  })

  test('an emit made on a transaction of the service reaches the handlers', async () => {
    const m = await local()
    const seen = []
    m.on('viaTx', msg => seen.push(msg.data))
    await m.emit('viaTx', { n: 0 }) // once listening
    await m.tx(tx => tx.emit('viaTx', { n: 1 }))
    await cds.tx(() => m.emit('viaTx', { n: 2 }))
    expect(seen).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }])
    await m.disconnect()
  })

  test('handlerTimeout: a first attempt that never settles is redelivered', async () => {
    const m = await local({ handlerTimeout: 50 })
    let calls = 0
    m.on('stuck', () => {
      if (++calls === 1) return new Promise(() => {})
    })
    await m.emit('stuck', {})
    expect(calls).toBe(2)
    await m.disconnect()
  })

  test('an emit of a topic nobody subscribed resolves without a delivery', async () => {
    const m = await local()
    m.on('other', () => {})
    await m.emit('unheard', {})
    expect(m.stats()).toMatchObject({ delivered: 0 })
    await m.disconnect()
  })

  test('5,000 concurrent emits are all delivered once and counted', async () => {
    const m = await local()
    let n = 0
    m.on('many', () => {
      n++
    })
    await Promise.all(Array.from({ length: 5000 }, (_, i) => m.emit('many', { i })))
    expect(n).toBe(5000)
    await new Promise(r => setImmediate(r))
    expect(m.stats()).toMatchObject({ emitted: 5000, delivered: 5000, acked: 5000, inFlight: 0 })
    await m.disconnect()
  })
})
