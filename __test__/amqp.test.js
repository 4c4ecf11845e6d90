'use strict'
// native-amqp-messaging in a CAP app (cds.test) against RabbitMQ 3.x with the AMQP 1.0 plugin.
const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')
const tls = require('node:tls')
const { execFileSync } = require('node:child_process')
const { until, freePort, tmpDir } = require('./helpers')
const { URL, RUN, ensureRabbit, deleteQueues, deleteQueueNow, queueDepth } = require('./amqp-helpers')

const queues = [`${RUN}-app`]
// Topics are prefixed per run: amq.topic is shared with every other user of this broker.
process.env.CDS_CONFIG = JSON.stringify({
  requires: {
    messaging: {
      kind: 'native-amqp-messaging',
      url: URL,
      queue: { name: queues[0] },
      publishPrefix: `${RUN}.`,
      subscribePrefix: `${RUN}.`,
      maxAttempts: 3,
      retryDelay: 20
    }
  }
})
const cds = require('@sap/cds')
const { sharedTests } = require('./suite')

const others = []
async function service(name, options) {
  const queue = `${RUN}-${name}`
  queues.push(queue)
  const s = await cds.connect.to(`${RUN}-${name}`, { kind: 'native-amqp-messaging', url: URL, queue: { name: queue }, ...options })
  others.push(s)
  return s
}

describe('native-amqp-messaging (RabbitMQ)', () => {
  beforeAll(ensureRabbit, 150000)
  const t = cds.test(path.join(__dirname, 'apps', 'reviews'))
  const log = cds.test.log()
  const ctx = { kind: 'native-amqp-messaging', extra: { url: URL }, POST: (...a) => t.POST(...a) }
  beforeAll(async () => {
    ctx.messaging = await cds.connect.to('messaging')
  })
  afterAll(async () => {
    for (const s of others) await s.disconnect()
    await ctx.messaging?.disconnect()
    deleteQueues(queues)
  })

  test('is our kind', () => {
    expect(ctx.messaging.constructor.name).toBe('NativeAmqpMessaging')
  })

  sharedTests(ctx)

  test('handler always throws: rejected after maxAttempts, so the queue\'s dead-letter exchange takes it', async () => {
    // The dead-letter queue is bound to amq.fanout, the poison queue's x-dead-letter-exchange.
    const dead = await service('dead', { exchange: 'amq.fanout', maxAttempts: 1 })
    const got = []
    dead.on(`${RUN}.poison`, msg => got.push(msg))
    await dead.startListening()
    const src = await service('poison', {
      maxAttempts: 2,
      retryDelay: 10,
      queue: { name: `${RUN}-poison`, deadLetterExchange: 'amq.fanout' }
    })
    let calls = 0
    src.on(`${RUN}.poison`, () => {
      calls++
      throw new Error('cannot process')
    })
    await src.startListening()
    await src.emit(`${RUN}.poison`, { p: 1 }, { reason: 'test' })
    await until(() => got.length === 1, 15000, 'the dead-lettered message')
    expect(calls).toBe(2)
    expect(got[0].data).toEqual({ p: 1 })
    expect(got[0].headers).toMatchObject({ reason: 'test' })
    expect(log.output).toMatch(/failed 2 time\(s\) and was moved to the dead-letter place/)
    await until(() => queueDepth(`${RUN}-poison`) === 0, 10000, 'an empty poison queue')
  })

  test('a declared event subscribed on messaging arrives once (cds\'s forwarder does not loop it back out)', async () => {
    const seen = []
    ctx.messaging.on('ReviewsService.reviewed', msg => seen.push(msg.data))
    await ctx.POST('/odata/v4/reviews/review', { subject: 'once', rating: 1 })
    await until(() => seen.some(d => d.subject === 'once'), 10000, 'the declared event')
    await new Promise(r => setTimeout(r, 1000))
    expect(seen.filter(d => d.subject === 'once')).toHaveLength(1)
  })

  test('a subscription made after listening is bound and receives', async () => {
    const seen = []
    ctx.messaging.on('late.topic', msg => seen.push(msg.data))
    await ctx.messaging.emit('late.topic', { late: true })
    await until(() => seen.length === 1, 10000, 'delivery')
    expect(seen[0]).toEqual({ late: true })
  })

  test('qos 0 sends settled and still arrives', async () => {
    const s = await service('qos0', { qos: 0 })
    const seen = []
    s.on(`${RUN}.qos0`, msg => seen.push(msg.data.i))
    await s.startListening()
    await Promise.all([1, 2, 3].map(i => s.emit(`${RUN}.qos0`, { i })))
    await until(() => seen.length === 3, 10000, 'deliveries')
    expect(seen.sort()).toEqual([1, 2, 3])
  })

  test('wrong password: emit rejects with CONNECTION_FAILED, no secret in the message, host keeps running', async () => {
    // The password goes into credentials.password (cds masks it when it logs the service options).
    const s = await service('badpw', {
      url: undefined,
      credentials: { url: 'amqp://127.0.0.1:5672', user: 'guest', password: 'wrong-secret' },
      connection: { dedicated: true }
    })
    const err = await s.emit(`${RUN}.x`, {}).catch(e => e)
    expect(err).toBeInstanceOf(Error)
    expect(err.code).toBe('CONNECTION_FAILED')
    expect(err.message).toMatch(/authentication/)
    expect(err.message).not.toContain('wrong-secret')
    expect(log.output).not.toContain('wrong-secret')
  })

  test('nothing listening on the port: emit rejects with CONNECTION_FAILED at once', async () => {
    const port = await freePort()
    const s = await service('noport', { url: `amqp://guest:guest@127.0.0.1:${port}` })
    const t0 = Date.now()
    const err = await s.emit(`${RUN}.x`, {}).catch(e => e)
    expect(err.code).toBe('CONNECTION_FAILED')
    expect(err.message).toMatch(/cannot reach/)
    expect(Date.now() - t0).toBeLessThan(5000)
  })

  test('bad address: emit rejects with NO_ROUTE naming the broker\'s reason', async () => {
    const s = await service('badaddr', {
      profile: 'generic',
      addresses: { publish: `/exchange/${RUN}-no-such-exchange/{topic}`, consume: '/amq/queue/{queue}' }
    })
    const err = await s.emit('anything', {}).catch(e => e)
    expect(err.code).toBe('NO_ROUTE')
    expect(err.message).toMatch(/not-found|no exchange/i)
    // the other links of the shared connection are unaffected
    const seen = []
    ctx.messaging.on('after.bad.address', () => seen.push(1))
    await ctx.messaging.emit('after.bad.address', {})
    await until(() => seen.length === 1, 10000, 'delivery after a refused attach')
  })

  test('unknown queue (provision off): an error line with a code, retried, the host keeps running', async () => {
    const s = await service('absent', { queue: { name: `${RUN}-absent`, provision: false } })
    s.on(`${RUN}.absent`, () => {})
    await s.startListening()
    await until(() => /CONNECTION_FAILED: the broker refused to let this service consume from '\/amq\/queue\/[^']*-absent'.*not-found/.test(log.output), 10000, 'the error line')
    expect(queueDepth(`${RUN}-absent`)).toBeUndefined() // never created
  })

  test('a message without a topic goes to \'*\' handlers, or is dead-lettered with an error line', async () => {
    // azure-service-bus sends to the topic as link target without subject: on RabbitMQ 3.x the target
    // /amq/queue/<q> puts a message without routing key or subject straight into <q>.
    const raw = await service('raw', { profile: 'azure-service-bus' })
    const star = await service('star')
    const got = []
    star.on(`${RUN}.bind-star`, () => {})
    star.on('*', msg => got.push(msg))
    await star.startListening()
    const none = await service('nostar', { maxAttempts: 1 })
    none.on(`${RUN}.bind-nostar`, () => {})
    await none.startListening()
    await until(() => queueDepth(`${RUN}-star`) === 0 && queueDepth(`${RUN}-nostar`) === 0, 10000, 'queues')
    await raw.emit(`/amq/queue/${RUN}-star`, { untopical: 1 })
    await until(() => got.length === 1, 10000, "the '*' handler")
    expect(got[0].data).toEqual({ untopical: 1 })
    await raw.emit(`/amq/queue/${RUN}-nostar`, { untopical: 2 })
    await until(() => /carries no topic/.test(log.output) && /message on topic '' .*dead-letter place/.test(log.output), 10000, 'the dead-letter line')
    await until(() => queueDepth(`${RUN}-nostar`) === 0, 10000, 'an empty queue')
  })

  test('queue deleted while consuming: it is declared and bound again, consumption resumes', async () => {
    const s = await service('deleted', { connection: { reconnectDelay: 50, maxReconnectDelay: 500 } })
    const seen = []
    s.on(`${RUN}.deleted`, msg => seen.push(msg.data.n))
    await s.startListening()
    await s.emit(`${RUN}.deleted`, { n: 1 })
    await until(() => seen.length === 1, 10000, 'first delivery')
    deleteQueueNow(`${RUN}-deleted`)
    await until(() => queueDepth(`${RUN}-deleted`) === 0, 15000, 'the queue to be declared again')
    await until(async () => {
      await s.emit(`${RUN}.deleted`, { n: 2 })
      await new Promise(r => setTimeout(r, 300))
      return seen.includes(2)
    }, 15000, 'a delivery after the queue came back')
  })

  test('amqps: verifies the broker certificate by default, trusts tls.ca, rejectUnauthorized: false skips it', async () => {
    const dir = tmpDir('amqps')
    const key = path.join(dir, 'key.pem')
    const cert = path.join(dir, 'cert.pem')
    const ca = path.join(dir, 'ca.pem')
    const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' })
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', ca, '-days', '1', '-subj', '/CN=cnm test CA')
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', 'leaf.csr', '-subj', '/CN=localhost')
    fs.writeFileSync(path.join(dir, 'ext'), 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n')
    openssl('x509', '-req', '-in', 'leaf.csr', '-CA', ca, '-CAkey', 'ca.key', '-CAcreateserial', '-out', cert, '-days', '1', '-extfile', 'ext')
    // A TLS terminator in front of RabbitMQ's plain AMQP port.
    const server = tls.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, c => {
      const u = net.connect(5672, '127.0.0.1')
      c.pipe(u)
      u.pipe(c)
      const kill = () => (c.destroy(), u.destroy())
      c.on('error', kill)
      u.on('error', kill)
      c.on('close', kill)
      u.on('close', kill)
    })
    const port = await freePort()
    await new Promise(r => server.listen(port, '127.0.0.1', r))
    try {
      const credentials = { url: `amqps://localhost:${port}`, user: 'guest', password: 'guest' }
      const trusted = await service('tls', { url: undefined, credentials, tls: { ca } })
      const seen = []
      trusted.on(`${RUN}.tls`, msg => seen.push(msg.data))
      await trusted.startListening()
      await trusted.emit(`${RUN}.tls`, { secure: true })
      await until(() => seen.length === 1, 10000, 'delivery over TLS')

      const untrusted = await service('tls-untrusted', { url: undefined, credentials, connection: { dedicated: true } })
      const err = await untrusted.emit(`${RUN}.tls`, {}).catch(e => e)
      expect(err.code).toBe('CONNECTION_FAILED')
      expect(err.message).toMatch(/TLS|certificate/i)

      const insecure = await service('tls-insecure', { url: undefined, credentials, tls: { rejectUnauthorized: false }, connection: { dedicated: true } })
      await insecure.emit(`${RUN}.tls`, { secure: false })
      await until(() => seen.length === 2, 10000, 'delivery without verification')
    } finally {
      server.close()
    }
  })

  test("event-mesh with format 'cloudevents': topics and headers as @sap/cds enterprise-messaging prepares them", async () => {
    const s = await cds.connect.to(`${RUN}-ce`, {
      kind: 'native-amqp-messaging',
      url: URL,
      profile: 'event-mesh',
      format: 'cloudevents',
      credentials: { namespace: 'sap/app/1' }
    })
    others.push(s)
    expect(s.prepareTopic('my.service.Event', false)).toBe('sap/app/1/ce/my/service/Event')
    expect(s.prepareTopic('my.service.Event', true)).toBe('+/+/+/ce/my/service/Event')
    expect(s.wildcarded('sap/app/1/ce/my/service/Event')).toBe('+/+/+/ce/my/service/Event')
    const headers = {}
    s.prepareHeaders(headers, 'my.service.Event')
    expect(headers).toMatchObject({ source: '/sap/app/1', type: 'my.service.Event', specversion: '1.0' })
    expect(typeof headers.id).toBe('string')
    // the body is what enterprise-messaging-shared sends: headers and data in one object
    expect(JSON.parse(s.serialize({ data: { a: 1 }, headers }))).toEqual({ ...headers, data: { a: 1 } })
    expect(s.deserialize('t', { id: '1', data: { a: 1 } })).toEqual({ event: 't', data: { a: 1 }, headers: { id: '1' } })
    expect(s.deserialize('t', 'plain text')).toEqual({ event: 't', data: 'plain text', headers: {} })
    expect(s.deserialize('', { data: 1 }).event).toBe('*')
  })

  test('invalid AMQP options fail with INVALID_CONFIG', async () => {
    for (const [bad, re] of [
      [{ url: undefined }, /url/],
      [{ url: 'http://x' }, /scheme/],
      [{ profile: 'kafka' }, /profile/],
      [{ profile: 'eventter' }, /namespace/],
      [{ qos: 2 }, /qos/],
      [{ queue: { name: 'a/b' } }, /cannot express/],
      [{ tls: { ca: '/no/such/file.pem' } }, /tls\.ca/]
    ]) {
      const err = await cds.connect.to({ kind: 'native-amqp-messaging', url: URL, ...bad }).catch(e => e)
      expect(err).toBeInstanceOf(Error)
      expect(err.code).toBe('INVALID_CONFIG')
      expect(err.message).toMatch(re)
    }
  })
})
