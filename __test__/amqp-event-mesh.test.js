'use strict'
// The event-mesh profile against an in-process fake Event Mesh (rhea): the bytes it sends, side by side
// with @sap/cds's own AMQP client (common-utils/AMQPClient.js over @sap/xb-msg-amqp-v100, what
// enterprise-messaging-shared uses), interop in both directions, and the outcomes it settles with.
const rhea = require('rhea')
const { until, freePort } = require('./helpers')

/**
 * A minimal Event Mesh: senders publish with `to: topic:<t>` (anonymous or not), every queue
 * (`queue:<q>`, a receiving link) gets every message. Records what arrives and the consumers' outcomes;
 * released/modified messages are delivered again.
 */
async function fakeEventMesh() {
  const port = await freePort()
  const c = rhea.create_container({ id: 'fake-event-mesh' })
  c.sasl_server_mechanisms.enable_plain((user, password) => user === 'u' && password === 'p')
  c.sasl_server_mechanisms.enable_anonymous()
  const received = []
  const outcomes = []
  const consumers = new Map() // queue address -> { sender, backlog }
  const sent = new Map() // delivery -> message
  const push = (q, message) => {
    if (q.sender.sendable()) sent.set(q.sender.send(message), { q, message })
    else q.backlog.push(message)
  }
  c.on('receiver_open', ctx => ctx.receiver.set_target(ctx.receiver.remote.attach.target || {}))
  c.on('sender_open', ctx => {
    ctx.sender.set_source(ctx.sender.remote.attach.source)
    const address = ctx.sender.source && ctx.sender.source.address
    consumers.set(address, { sender: ctx.sender, backlog: [] })
  })
  c.on('sendable', ctx => {
    for (const q of consumers.values()) if (q.sender === ctx.sender) while (q.backlog.length && q.sender.sendable()) push(q, q.backlog.shift())
  })
  c.on('message', ctx => {
    if (String(ctx.message.to).startsWith('topic:forbidden/')) {
      ctx.delivery.reject({ condition: 'amqp:not-allowed', description: 'publishing to forbidden/ is not allowed' })
      return
    }
    received.push({ message: ctx.message, target: ctx.receiver.target && ctx.receiver.target.address })
    for (const q of consumers.values()) push(q, ctx.message)
  })
  // (rhea also dispatches 'released' for 'modified': one outcome per delivery is recorded.)
  for (const event of ['accepted', 'modified', 'released', 'rejected'])
    c.on(event, ctx => {
      let state = event
      const s = sent.get(ctx.delivery)
      if (!s || s.settled) return
      s.settled = true
      const r = ctx.delivery.remote_state
      if (r && r.constructor && r.constructor.composite_type) state = r.constructor.composite_type
      outcomes.push({ state, remote: r })
      if (state === 'released' || state === 'modified') push(s.q, s.message)
    })
  c.on('error', () => {})
  const listener = c.listen({ host: '127.0.0.1', port })
  await new Promise(resolve => listener.once('listening', resolve))
  return { port, received, outcomes, consumers, close: () => listener.close() }
}

process.env.CDS_CONFIG = JSON.stringify({ requires: { messaging: { kind: 'native-local-messaging' } } })
const cds = require('@sap/cds')

describe('native-amqp-messaging, profile event-mesh (fake broker)', () => {
  let em
  let ours
  let theirs
  beforeAll(async () => {
    em = await fakeEventMesh()
    ours = await cds.connect.to('em-ours', {
      kind: 'native-amqp-messaging',
      profile: 'event-mesh',
      url: `amqp://127.0.0.1:${em.port}`,
      credentials: { user: 'u', password: 'p' },
      queue: { name: 'sap/app/ours' },
      maxAttempts: 2,
      retryDelay: 10
    })
    const AMQPClient = require('@sap/cds/libx/_runtime/messaging/common-utils/AMQPClient')
    theirs = new AMQPClient({
      optionsAMQP: { net: { host: '127.0.0.1', port: em.port }, sasl: { mechanism: 'PLAIN', user: 'u', password: 'p' } },
      prefix: { topic: 'topic:', queue: 'queue:' },
      service: { optionsApp: { appName: 'cds', appID: '12345678' }, LOG: cds.log('em-theirs'), queueName: 'sap/app/theirs' }
    })
    await theirs.connect()
  })
  afterAll(async () => {
    await ours?.disconnect()
    await theirs?.disconnect()
    em?.close()
  })

  test('outbound: the same sections, body bytes, to and content-type as @sap/cds enterprise-messaging-shared', async () => {
    const headers = { 'x-correlation-id': 'c-1', note: 'ä€' }
    const data = { ID: 1, text: 'hello' }
    await theirs.emit({ event: 'sap/app/Orders/created', data, headers })
    await ours.emit('sap/app/Orders/created', data, headers)
    const ce = { id: 'e1', source: '/sap/app', specversion: '1.0', type: 'sap.app.Orders.created' }
    await theirs.emit({ event: 'sap/app/Orders/ce', data, headers: ce })
    await ours.emit('sap/app/Orders/ce', data, ce)
    await until(() => em.received.length === 4, 10000, 'four messages at the broker')
    const [a, b, ca, cb] = em.received.map(r => r.message)
    for (const [x, y] of [
      [a, b],
      [ca, cb]
    ]) {
      expect(y.body.typecode).toBe(0x75) // one Data section
      expect(y.body.multiple).toBeFalsy()
      expect(x.body.typecode).toBe(0x75)
      expect(Buffer.compare(Buffer.from(y.body.content), Buffer.from(x.body.content))).toBe(0) // same bytes
      expect(y.to).toBe(x.to)
      expect(y.content_type).toBe(x.content_type)
    }
    expect(b.to).toBe('topic:sap/app/Orders/created')
    expect(b.content_type).toBe('application/json')
    expect(cb.content_type).toBe('application/cloudevents+json')
    expect(JSON.parse(Buffer.from(b.body.content).toString())).toEqual({ ...headers, data })
    // both use the anonymous relay (no target address)
    expect(em.received[1].target || null).toBe(em.received[0].target || null)
    // what we add: a message id and the durable flag
    expect(typeof b.message_id).toBe('string')
    expect(b.durable).toBe(true)
  })

  test('SASL ANONYMOUS without credentials, and PLAIN refused with a wrong password', async () => {
    const anon = await cds.connect.to('em-anon', { kind: 'native-amqp-messaging', profile: 'event-mesh', url: `amqp://127.0.0.1:${em.port}` })
    const n = em.received.length
    await anon.emit('sap/app/anon', { a: 1 })
    await until(() => em.received.length === n + 1, 10000, 'the anonymous message')
    await anon.disconnect()
    const bad = await cds.connect.to('em-bad', {
      kind: 'native-amqp-messaging',
      profile: 'event-mesh',
      url: `amqp://127.0.0.1:${em.port}`,
      credentials: { user: 'u', password: 'nope' }
    })
    const err = await bad.emit('sap/app/anon', {}).catch(e => e)
    expect(err.code).toBe('CONNECTION_FAILED')
    expect(err.message).toMatch(/authentication/)
    await bad.disconnect()
  })

  test('a message the broker rejects with amqp:not-allowed: REJECTED, marked unrecoverable for the outbox', async () => {
    const err = await ours.emit('forbidden/topic', { x: 1 }).catch(e => e)
    expect(err).toBeInstanceOf(Error)
    expect(err.code).toBe('REJECTED')
    expect(err.message).toMatch(/amqp:not-allowed: publishing to forbidden\/ is not allowed/)
    expect(err.unrecoverable).toBe(true)
    // the link stays usable
    const n = em.received.length
    await ours.emit('sap/app/after-reject', {})
    await until(() => em.received.length === n + 1, 10000, 'the next message')
  })

  test('interop: @sap/cds receives what we send, we receive what @sap/cds sends', async () => {
    const theirsGot = []
    await theirs.listen(async (topic, payload, _other, { done }) => {
      theirsGot.push({ topic, payload: JSON.parse(payload) })
      done()
    })
    const oursGot = []
    ours.on('sap/app/interop', msg => oursGot.push({ event: msg.event, data: msg.data, headers: msg.headers }))
    await ours.startListening()
    await until(() => em.consumers.has('queue:sap/app/ours') && em.consumers.has('queue:sap/app/theirs'), 10000, 'both consumers')
    await ours.emit('sap/app/interop', { from: 'ours' }, { h: 1 })
    await theirs.emit({ event: 'sap/app/interop', data: { from: 'theirs' }, headers: { h: 2 } })
    await until(() => oursGot.length === 2 && theirsGot.length === 2, 10000, 'both messages on both sides')
    const byFrom = list => Object.fromEntries(list.map(m => [m.data?.from ?? m.payload.data.from, m]))
    expect(byFrom(oursGot).theirs).toEqual({ event: 'sap/app/interop', data: { from: 'theirs' }, headers: { h: 2 } })
    expect(byFrom(theirsGot).ours).toEqual({ topic: 'sap/app/interop', payload: { h: 1, data: { from: 'ours' } } })
  })

  test('outcomes: accepted on success, modified (delivery-failed) to redeliver, rejected after maxAttempts', async () => {
    let calls = 0
    ours.on('sap/app/poison', () => {
      calls++
      throw new Error('cannot process')
    })
    await ours.startListening()
    await until(() => em.consumers.has('queue:sap/app/ours'), 10000, 'our consumer')
    em.outcomes.length = 0
    await ours.emit('sap/app/poison', {})
    await until(() => em.outcomes.some(o => o.state === 'rejected'), 10000, 'the rejected outcome')
    expect(calls).toBe(2)
    const mine = em.outcomes.filter(o => o.state !== 'accepted') // @sap/cds's consumer accepts its copy
    expect(mine.map(o => o.state)).toEqual(['modified', 'rejected'])
    expect(mine[0].remote.delivery_failed).toBe(true)
  })
})
