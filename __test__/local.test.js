'use strict'
process.env.CDS_CONFIG = JSON.stringify({
  requires: { messaging: { kind: 'native-local-messaging', maxAttempts: 3, retryDelay: 20 } }
})
const cds = require('@sap/cds')
const path = require('node:path')
const { sharedTests } = require('./suite')

describe('native-local-messaging', () => {
  const t = cds.test(path.join(__dirname, 'apps', 'reviews'))
  const log = cds.test.log()
  const ctx = { kind: 'native-local-messaging', extra: {}, POST: (...a) => t.POST(...a) }
  beforeAll(async () => {
    ctx.messaging = await cds.connect.to('messaging')
  })

  test('is our kind', () => {
    expect(ctx.messaging.constructor.name).toBe('NativeLocalMessaging')
  })

  sharedTests(ctx)

  test('emit resolves after the receivers processed the message', async () => {
    let done = false
    ctx.messaging.on('sync', async () => {
      await new Promise(r => setTimeout(r, 50))
      done = true
    })
    await ctx.messaging.emit('sync', {})
    expect(done).toBe(true)
  })

  test('handler always throws: dead letter after maxAttempts, a log line, and the emit rejects', async () => {
    let calls = 0
    ctx.messaging.on('poison', () => {
      calls++
      throw Object.assign(new Error('cannot process'), { code: 'BAD_REVIEW' })
    })
    const err = await ctx.messaging.emit('poison', { id: 1 }).catch(e => e)
    expect(calls).toBe(3)
    expect(err.code).toBe('HANDLER_FAILED')
    expect(err.message).toMatch(/cannot process/)
    const dead = ctx.messaging.deadLetters().filter(d => d.topic === 'poison')
    expect(dead).toHaveLength(1)
    expect(dead[0]).toMatchObject({ attempts: 3, error: 'cannot process' })
    expect(JSON.parse(dead[0].payload).data).toEqual({ id: 1 })
    await new Promise(r => setTimeout(r, 50)) // log lines cross from the engine thread
    expect(log.output).toMatch(/message on topic 'poison' failed 3 time\(s\) and was moved to the dead-letter place/)
  })

  test('an unrecoverable error is dead-lettered without retries', async () => {
    let calls = 0
    ctx.messaging.on('fatal', () => {
      calls++
      throw Object.assign(new Error('never'), { unrecoverable: true })
    })
    const err = await ctx.messaging.emit('fatal', {}).catch(e => e)
    expect(err.code).toBe('HANDLER_FAILED')
    expect(calls).toBe(1)
  })

  test("on('*') receives every topic", async () => {
    const seen = []
    ctx.messaging.on('*', msg => seen.push(msg.event))
    await ctx.messaging.emit('anything.at.all', {})
    expect(seen).toContain('anything.at.all')
  })
})
