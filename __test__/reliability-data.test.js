'use strict'
// Data that JSON cannot carry, and many subscriptions (issue #14, defect 12).
const path = require('node:path')
const cds = require('@sap/cds')
const { tmpDir, until } = require('./helpers')

const connect = (name, options) => cds.connect.to(`${name}-${process.pid}`, options)

describe('unserialisable data rejects with INVALID_DATA_FORMAT naming the topic', () => {
  const circular = { a: 1 }
  circular.self = circular
  test.each([
    ['a BigInt', { n: 10n }],
    ['a circular structure', circular]
  ])('%s', async (_, data) => {
    const m = await connect('data-local', { kind: 'native-local-messaging' })
    const err = await m.emit('cannot.serialise', data).catch(e => e)
    expect(err?.code).toBe('INVALID_DATA_FORMAT')
    expect(err.message).toMatch(/cannot emit 'cannot\.serialise'/)
    expect(err.name).toBe('NativeMessagingError')
    await m.disconnect()
  })
})

describe('on() of 5,000 topics after listening started', () => {
  test('takes linear time, and an emit right after the last on() is received', async () => {
    const file = path.join(tmpDir('many-topics'), 'box')
    const m = await connect('many-topics', { kind: 'native-file-based-messaging', file, interval: 100 })
    await m.startListening()
    const seen = []
    const t0 = Date.now()
    for (let i = 0; i < 5000; i++) m.on(`many.topic.${i}`, msg => seen.push(msg.event))
    await m.emit('many.topic.4999', {})
    const ms = Date.now() - t0
    await until(() => seen.length === 1, 10000, 'the delivery')
    expect(ms).toBeLessThan(1500) // was 5–6 s: every on() sent the whole set again
    await m.disconnect()
  }, 30000)
})
