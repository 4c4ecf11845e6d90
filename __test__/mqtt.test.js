'use strict'
// native-mqtt-messaging in one CAP process against the shared Mosquitto on 127.0.0.1:1883.
// Every topic and client id carries this run's id, and the sessions are removed at the end.
const RUN = `${process.pid}${Date.now().toString(36)}`
const URL = 'mqtt://127.0.0.1:1883'
const QUEUE = `jest-${RUN}`
const PREFIX = `t${RUN}/`
process.env.CDS_CONFIG = JSON.stringify({
  requires: {
    messaging: { kind: 'native-mqtt-messaging', url: URL, queue: QUEUE, publishPrefix: PREFIX, subscribePrefix: PREFIX, maxAttempts: 3, retryDelay: 20 }
  }
})
const path = require('node:path')
const cds = require('@sap/cds')
const { sharedTests } = require('./suite')
const { until, assertBroker, freePort } = require('./helpers')
const { watch, publishRaw, purgeSessions, clearRetained } = require('./mqtt-client')

describe('native-mqtt-messaging (shared Mosquitto)', () => {
  beforeAll(() => assertBroker('Mosquitto', 1883, 'apt-get install mosquitto && mosquitto -d -c /etc/mosquitto/mosquitto.conf'))
  const t = cds.test(path.join(__dirname, 'apps', 'reviews'))
  const log = cds.test.log()
  const ctx = { kind: 'native-mqtt-messaging', extra: { url: URL, queue: `${QUEUE}-bad` }, POST: (...a) => t.POST(...a) }
  const sessions = [QUEUE]
  const others = []
  const connect = async options => {
    const queue = `${QUEUE}-${others.length}`
    sessions.push(queue)
    const svc = await cds.connect.to({ kind: 'native-mqtt-messaging', url: URL, queue, maxAttempts: 2, retryDelay: 10, ...options })
    others.push(svc)
    return svc
  }
  beforeAll(async () => {
    ctx.messaging = await cds.connect.to('messaging')
  })
  afterAll(async () => {
    await Promise.all([ctx.messaging, ...others].map(s => s?.disconnect()))
    await purgeSessions(URL, sessions)
    // the dead letters this suite left retained on the shared broker
    for (const s of sessions) await clearRetained(URL, `dead-letter/${s}/#`)
  })

  test('is our kind and says what it guarantees', async () => {
    expect(ctx.messaging.constructor.name).toBe('NativeMqttMessaging')
    const g = ctx.messaging._engine.guarantee()
    expect(g.delivery).toBe('at-least-once')
    expect(g.summary).toMatch(`at-least-once (QoS 1) via mqtt://127.0.0.1:1883 with persistent session '${QUEUE}'`)
    expect(g.deadLetter).toBe(`dead-letter/${QUEUE}/<topic>/<id> (retained)`)
  })

  sharedTests(ctx)

  test('the emits of one tick go to the engine in one publish call, and every one resolves', async () => {
    // One call per tick, not one per emit: a publish call costs the producer's main thread more
    // than the emit itself (issue #16). The broker's Nagle stall at the end of such a burst is the
    // connection's to break (tests/mqtt.rs: a_burst_is_confirmed_when_the_broker_holds_its_last_puback…).
    const m = ctx.messaging
    const seen = []
    m.on('tickBatch', msg => seen.push(msg.data.i))
    await m.emit('tickBatch', { i: -1 }) // subscribed
    // (the emit path's engine call is `send`: `publish` without a Promise of its own)
    const send = m._engine.send
    const calls = []
    m._engine.send = (ticket, topics, ...rest) => (calls.push(topics.length), send.call(m._engine, ticket, topics, ...rest))
    try {
      for (let round = 0; round < 5; round++) await Promise.all([0, 1, 2].map(i => m.emit('tickBatch', { i: round * 3 + i })))
    } finally {
      m._engine.send = send
    }
    expect(calls).toEqual([3, 3, 3, 3, 3])
    await until(() => seen.length === 16, 5000, 'all deliveries')
    expect(seen.sort((a, b) => a - b)).toEqual([-1, ...Array.from({ length: 15 }, (_, i) => i)])
  })

  test('wire format: JSON.stringify({...headers, data}) on the prefixed topic', async () => {
    const raw = await watch(URL, `${PREFIX}wire`)
    try {
      await ctx.messaging.emit('wire', { a: 1 }, { h: 'v' })
      await until(() => raw.length === 1, 5000, 'the raw message')
      expect(JSON.parse(raw[0].payload)).toEqual({ h: 'v', data: { a: 1 } })
    } finally {
      await raw.close()
    }
  })

  test('inbound unwrapping as @sap/cds: a data property splits data and headers, otherwise all is data', async () => {
    const seen = []
    ctx.messaging.on('foreign', msg => seen.push({ data: msg.data, headers: msg.headers }))
    await ctx.messaging.emit('foreign-warmup', {}) // waits until the subscription above is confirmed
    await publishRaw(URL, `${PREFIX}foreign`, JSON.stringify({ data: { x: 1 }, source: 's' }))
    await publishRaw(URL, `${PREFIX}foreign`, JSON.stringify({ x: 2 }))
    await publishRaw(URL, `${PREFIX}foreign`, '[3]')
    await until(() => seen.length === 3, 5000, 'three deliveries')
    expect(seen[0]).toEqual({ data: { x: 1 }, headers: { source: 's' } })
    expect(seen[1]).toEqual({ data: { x: 2 }, headers: {} })
    expect(seen[2]).toEqual({ data: [3], headers: {} })
  })

  test('handler always throws: published unchanged to the dead-letter topic after maxAttempts, with a log line', async () => {
    const dead = await watch(URL, `dead-letter/${QUEUE}/#`)
    try {
      let calls = 0
      ctx.messaging.on('poison', () => {
        calls++
        throw new Error('cannot process')
      })
      await ctx.messaging.emit('poison', { id: 42 })
      await until(() => dead.length === 1, 10000, 'the dead letter')
      expect(calls).toBe(3)
      expect(dead[0].topic).toMatch(new RegExp(`^dead-letter/${QUEUE}/${PREFIX}poison/\\d{13}-[0-9a-f]{8}$`))
      expect(JSON.parse(dead[0].payload)).toEqual({ data: { id: 42 } })
      expect(log.output).toMatch(new RegExp(`message on topic '${PREFIX}poison' failed 3 time\\(s\\)`))
      await new Promise(r => setTimeout(r, 300))
      expect(calls).toBe(3) // acknowledged: not delivered again
    } finally {
      await dead.close()
    }
  })

  test('a non-JSON payload is logged with its topic and dead-lettered; the host keeps running', async () => {
    const dead = await watch(URL, `dead-letter/${QUEUE}/${PREFIX}bad/+`)
    try {
      const seen = []
      ctx.messaging.on('bad', msg => seen.push(msg.data))
      await ctx.messaging.emit('bad-warmup', {})
      await publishRaw(URL, `${PREFIX}bad`, 'this is not json')
      await until(() => dead.length === 1, 10000, 'the dead letter')
      expect(dead[0].payload).toBe('this is not json')
      expect(log.output).toMatch(new RegExp(`message on topic '${PREFIX}bad' is not valid`))
      await ctx.messaging.emit('bad', { ok: 1 })
      await until(() => seen.length === 1, 5000, 'the next message')
      expect(seen).toEqual([{ ok: 1 }])
    } finally {
      await dead.close()
    }
  })

  test('a payload that is not UTF-8 goes to the dead-letter topic byte for byte, with a warning', async () => {
    const dead = await watch(URL, `dead-letter/${QUEUE}/${PREFIX}binary/+`)
    try {
      ctx.messaging.on('binary', () => {})
      await ctx.messaging.emit('binary-warmup', {})
      const bytes = Buffer.from([0x7b, 0xff, 0xfe, 0x7d])
      await publishRaw(URL, `${PREFIX}binary`, bytes)
      await until(() => dead.length === 1, 10000, 'the dead letter')
      expect(Buffer.compare(dead[0].raw, bytes)).toBe(0)
      expect(log.output).toMatch(new RegExp(`message on topic '${PREFIX}binary' is not UTF-8 text`))
    } finally {
      await dead.close()
    }
  })

  test('wildcard subscriptions (+, #) reach the on() handler of the filter', async () => {
    const seen = []
    ctx.messaging.on('sensors/+/temp', msg => seen.push(['+', msg.event, msg.data.v]))
    ctx.messaging.on('alarms/#', msg => seen.push(['#', msg.event, msg.data.v]))
    await ctx.messaging.emit('wildcard-warmup', {})
    await publishRaw(URL, `${PREFIX}sensors/k1/temp`, JSON.stringify({ data: { v: 1 } }))
    await publishRaw(URL, `${PREFIX}alarms/fire/floor/2`, JSON.stringify({ data: { v: 2 } }))
    await ctx.messaging.emit('sensors/k2/temp', { v: 3 })
    await until(() => seen.length === 3, 5000, 'three deliveries')
    expect(seen.sort()).toEqual([
      ['#', 'alarms/#', 2],
      ['+', 'sensors/+/temp', 1],
      ['+', 'sensors/+/temp', 3]
    ])
  })

  test("topicSeparator '/': dots of event names become topic levels, and map back to the event", async () => {
    const svc = await connect({ topicSeparator: '/' })
    const raw = await watch(URL, `x${RUN}/#`)
    try {
      const seen = []
      svc.on(`x${RUN}.orders.created`, msg => seen.push(msg.event))
      await svc.startListening()
      await svc.emit(`x${RUN}.orders.created`, { n: 1 })
      await until(() => seen.length === 1 && raw.length === 1, 5000, 'the delivery')
      expect(raw[0].topic).toBe(`x${RUN}/orders/created`)
      expect(seen).toEqual([`x${RUN}.orders.created`])
    } finally {
      await raw.close()
    }
  })

  test("on('*') with forceListening subscribes '#' and receives any topic", async () => {
    const svc = await connect({ forceListening: true })
    const seen = []
    svc.on('*', msg => seen.push(msg.event))
    await svc.startListening()
    await svc.emit(`star${RUN}-warmup`, {})
    await publishRaw(URL, `star${RUN}/any/thing`, JSON.stringify({ data: {} }))
    await until(() => seen.includes(`star${RUN}/any/thing`), 5000, 'the catch-all delivery')

    // its own dead letters come back through '#' but are not processed again
    const dead = await watch(URL, `dead-letter/${svc.options.queue}/#`)
    try {
      let calls = 0
      svc.on(`star${RUN}/poison`, () => {
        calls++
        throw new Error('always')
      })
      await svc.emit(`star${RUN}/poison`, {})
      await until(() => dead.length === 1, 5000, 'the dead letter')
      await new Promise(r => setTimeout(r, 300))
      expect(calls).toBe(2)
      expect(seen.filter(e => e.startsWith(`dead-letter/${svc.options.queue}/`))).toEqual([])
    } finally {
      await dead.close()
    }
    // nor are another app's dead letters (last level a dead-letter id), retained or not
    const other = `dead-letter/other${RUN}/orders/1796126003912-a13052cf`
    sessions.push(`other${RUN}`)
    await publishRaw(URL, other, JSON.stringify({ data: { foreign: true } }))
    await publishRaw(URL, `star${RUN}/after`, JSON.stringify({ data: {} }))
    await until(() => seen.includes(`star${RUN}/after`), 5000, 'the message after it')
    expect(seen).not.toContain(other)
  })

  test('a subscriber of the dead-letter topic gets the dead letters, not the empty messages that remove retained ones', async () => {
    const svc = await connect({})
    const base = `dead-letter/watched${RUN}`
    const seen = []
    svc.on(`${base}/#`, msg => seen.push([msg.event, msg.data]))
    await svc.startListening()
    await svc.emit(`watched${RUN}-warmup`, {})
    const id = '1796126003912-a13052cf'
    await publishRaw(URL, `${base}/orders/${id}`, JSON.stringify({ data: { n: 1 } }))
    await publishRaw(URL, `${base}/orders/${id}`, '') // what `dead-letters redeliver`/`purge` send (retained)
    await publishRaw(URL, `${base}/orders/1796126003999-a13052cf`, JSON.stringify({ data: { n: 2 } }))
    await until(() => seen.length === 2, 5000, 'the two dead letters')
    await new Promise(r => setTimeout(r, 200))
    expect(seen).toEqual([
      [`${base}/#`, { n: 1 }],
      [`${base}/#`, { n: 2 }]
    ])
    expect(log.output).not.toMatch(`'${base}/orders/${id}' is not valid`)
  })

  test('emitting to a wildcard topic rejects with INVALID_DATA_FORMAT', async () => {
    const err = await ctx.messaging.emit('sensors/+/temp', {}).catch(e => e)
    expect(err.code).toBe('INVALID_DATA_FORMAT')
    expect(err.message).toMatch(/wildcards/)
  })

  test('QoS 0: emit and receive', async () => {
    const svc = await connect({ qos: 0 })
    const seen = []
    svc.on(`q0${RUN}`, msg => seen.push(msg.data.i))
    await svc.startListening()
    await Promise.all([0, 1, 2].map(i => svc.emit(`q0${RUN}`, { i })))
    await until(() => seen.length === 3, 5000, 'three deliveries')
    expect(seen.sort()).toEqual([0, 1, 2])
  })

  test('bad URLs and options fail with INVALID_CONFIG and a clear message, without the password', async () => {
    for (const [url, why] of [
      ['http://localhost:1883', /scheme must be mqtt:\/\/, mqtts:\/\/, ws:\/\/ or wss:\/\//],
      ['localhost:1883', /expected <scheme>:\/\/<host>/],
      ['mqtt://user:secret@', /host is missing/],
      ['mqtt://host:70000', /port must be a number/]
    ]) {
      const err = await cds.connect.to({ kind: 'native-mqtt-messaging', url }).catch(e => e)
      expect(err.code).toBe('INVALID_CONFIG')
      expect(err.message).toMatch(why)
      expect(err.message).not.toMatch(/secret/)
    }
    for (const [bad, option] of [
      [{ qos: 2 }, /qos must be 0 or 1/],
      [{ topicSeparator: '-' }, /topicSeparator/],
      [{ sharedGroup: 'a/b' }, /sharedGroup/],
      [{ ca: '/does/not/exist.pem', url: 'mqtts://localhost' }, /ca must be PEM/],
      [{ token: 'abc' }, /token is sent on the WebSocket upgrade/]
    ]) {
      const err = await cds.connect.to({ kind: 'native-mqtt-messaging', url: URL, ...bad }).catch(e => e)
      expect(err.code).toBe('INVALID_CONFIG')
      expect(err.message).toMatch(option)
    }
  })

  test('WebSocket: the OAuth token goes as bearer header on the upgrade request, the path as given', async () => {
    const net = require('node:net')
    const requests = []
    const server = net.createServer(sock => sock.on('data', d => (requests.push(d.toString('latin1')), sock.destroy())))
    await new Promise(r => server.listen(0, '127.0.0.1', r))
    try {
      const { port } = server.address()
      const svc = await connect({ url: `ws://127.0.0.1:${port}`, path: '/protocols/mqtt311ws', token: 'tok-123', publishTimeout: 300 })
      expect((await svc.emit('ws-token', {}).catch(e => e)).code).toBe('CONNECTION_FAILED')
      await until(() => requests.length > 0, 5000, 'the upgrade request')
      expect(requests[0]).toMatch(/^GET \/protocols\/mqtt311ws HTTP\/1\.1\r\n/)
      expect(requests[0]).toMatch(/\r\nauthorization: Bearer tok-123\r\n/i)
      expect(requests[0]).toMatch(/\r\nsec-websocket-protocol: mqtt\r\n/i)
      await svc.disconnect()
    } finally {
      server.close()
    }
  })

  test('an unreachable broker: emit rejects with CONNECTION_FAILED after publishTimeout, the host keeps running', async () => {
    const port = await freePort()
    const svc = await connect({ url: `mqtt://127.0.0.1:${port}`, publishTimeout: 300, reconnectDelay: 50 })
    const err = await svc.emit('nowhere', {}).catch(e => e)
    expect(err.code).toBe('CONNECTION_FAILED')
    expect(err.message).toMatch(new RegExp(`not confirmed by broker mqtt://127\\.0\\.0\\.1:${port} in time \\(not connected: .*refused`, 'i'))
    await until(() => new RegExp(`cannot connect \\(publisher mqtt://127\\.0\\.0\\.1:${port}`).test(log.output), 5000, 'the log line')
    await svc.disconnect()
    // the main service still works
    const seen = []
    ctx.messaging.on('afterUnreachable', () => seen.push(1))
    await ctx.messaging.emit('afterUnreachable', {})
    await until(() => seen.length === 1, 5000, 'delivery')
  })
})
