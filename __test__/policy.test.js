'use strict'
// CloudEvents, structured messages, topic preparation and the error hook (on the local kind; the
// same code path serves every native kind).
process.env.CDS_CONFIG = JSON.stringify({
  requires: {
    messaging: { kind: 'native-local-messaging', maxAttempts: 3, retryDelay: 10 },
    'messaging-ce': { kind: 'native-local-messaging', format: 'cloudevents', maxAttempts: 1 },
    'messaging-ns': { kind: 'native-file-based-messaging', file: require('node:path').join(require('./helpers').tmpDir('policy'), 'box'), publishPrefix: '$namespace/', credentials: { namespace: 'my/ns' }, format: 'cloudevents' },
    'messaging-structured': { kind: 'native-local-messaging', structured: true }
  }
})
const cds = require('@sap/cds')
const fs = require('node:fs')
const path = require('node:path')
const { native } = require('../lib/native')

describe('message format and error policy', () => {
  cds.test(path.join(__dirname, 'apps', 'reviews'))
  const log = cds.test.log()

  test('cloudevents: missing attributes are filled, headers the app set are kept, the envelope is CloudEvents 1.0', async () => {
    const ce = await cds.connect.to('messaging-ce')
    const seen = []
    ce.on('OrderCreated', msg => seen.push(msg))
    await ce.emit('OrderCreated', { ID: 1 }, { 'x-correlation-id': 'corr-1', custom: 'kept', id: 'my-own-id' })
    await ce.emit('OrderCreated', { ID: 2 })
    expect(seen).toHaveLength(2)
    const [a, b] = seen.map(m => m.headers)
    expect(a).toMatchObject({ id: 'my-own-id', type: 'OrderCreated', specversion: '1.0', datacontenttype: 'application/json', 'x-correlation-id': 'corr-1', custom: 'kept' })
    expect(a.source).toBe(`/default/sap.cap/${process.pid}`)
    expect(new Date(a.time).toString()).not.toBe('Invalid Date')
    expect(b.id).toMatch(/^[0-9a-f-]{36}$/)
    // every envelope validates as CloudEvents 1.0 JSON (checked with cloudevents-sdk)
    for (const m of seen) {
      const envelope = { ...m.headers, data: m.data }
      expect(() => native().completeCloudEventHeaders(JSON.stringify(envelope), 'x', '/x')).not.toThrow()
      expect(JSON.parse(native().completeCloudEventHeaders(JSON.stringify(envelope), 'x', '/x'))).toEqual(envelope)
    }
  })

  test('cloudevents: a header set that makes an invalid CloudEvent is rejected with INVALID_DATA_FORMAT', async () => {
    const ce = await cds.connect.to('messaging-ce')
    for (const headers of [{ specversion: '0.3' }, { time: 'yesterday' }, { id: '' }]) {
      const err = await ce.emit('Bad', {}, headers).catch(e => e)
      expect(err.code).toBe('INVALID_DATA_FORMAT')
      expect(err.message).toMatch(/CloudEvents 1.0/)
    }
  })

  test('$namespace and publishPrefix are applied on the wire; source is /<namespace>', async () => {
    const ns = await cds.connect.to('messaging-ns')
    await ns.emit('Changed', { a: 1 })
    const line = fs.readFileSync(ns.options.file, 'utf8').split('\n').find(l => l.includes('Changed'))
    expect(line.startsWith('my/ns/Changed {')).toBe(true)
    const { headers } = JSON.parse(line.slice(line.indexOf(' ') + 1))
    expect(headers).toMatchObject({ type: 'Changed', source: '/my/ns', specversion: '1.0' })
  })

  test("structured: emit(topic, 'string') becomes { message: 'string' }", async () => {
    const s = await cds.connect.to('messaging-structured')
    const seen = []
    s.on('text', msg => seen.push(msg.data))
    await s.emit('text', 'hello')
    expect(seen).toEqual([{ message: 'hello' }])
  })

  test("error hook: 'ack' is honoured (no redelivery, the emit resolves)", async () => {
    const m = await cds.connect.to('messaging')
    let calls = 0
    const hooked = []
    m.onFailure((err, msg, info) => {
      hooked.push({ message: err.message, event: msg.event, ...info })
      return msg.event === 'ackOnError' ? 'ack' : undefined
    })
    m.on('ackOnError', () => {
      calls++
      throw new Error('ignore me')
    })
    await m.emit('ackOnError', {})
    expect(calls).toBe(1)
    expect(hooked).toEqual([{ message: 'ignore me', event: 'ackOnError', attempt: 1, maxAttempts: 3 }])
  })

  test("error hook: 'dead-letter' stops at once; default: retried up to maxAttempts, then dead-lettered", async () => {
    const m = await cds.connect.to('messaging')
    m.onFailure((err, msg) => (msg.event === 'giveUp' ? 'dead-letter' : undefined))
    let giveUp = 0
    let retried = 0
    m.on('giveUp', () => {
      giveUp++
      throw new Error('no')
    })
    m.on('retried', () => {
      retried++
      throw new Error('no')
    })
    expect((await m.emit('giveUp', {}).catch(e => e)).code).toBe('HANDLER_FAILED')
    expect(giveUp).toBe(1)
    expect((await m.emit('retried', {}).catch(e => e)).code).toBe('HANDLER_FAILED')
    expect(retried).toBe(3)
    expect(m.deadLetters().map(d => d.topic)).toEqual(expect.arrayContaining(['giveUp', 'retried']))
  })

  test('an inbound message that fails to parse reaches the hook with INVALID_DATA_FORMAT and is dead-lettered', async () => {
    const m = await cds.connect.to('messaging')
    const hooked = []
    m.onFailure(err => {
      hooked.push(err.code)
    })
    m.on('raw', () => {})
    // A producer outside CAP publishing a non-JSON payload (the engine's own publish, bypassing emit).
    const [res] = await m._engine.publish(['raw'], ['not json at all'])
    expect(res).toMatchObject({ code: 'HANDLER_FAILED', message: expect.stringMatching(/^a handler of 'raw' failed/) }) // a Failure, no longer 'CODE: message'
    expect(hooked).toEqual(['INVALID_DATA_FORMAT'])
    expect(m.deadLetters().find(d => d.topic === 'raw')).toMatchObject({ attempts: 1, payload: 'not json at all' })
    await new Promise(r => setTimeout(r, 50))
    expect(log.output).toMatch(/message on topic 'raw' failed with an unrecoverable error/)
  })
})
