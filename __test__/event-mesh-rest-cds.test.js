'use strict'
// Interop of native-enterprise-messaging with @sap/cds's own `enterprise-messaging` (REST + webhook)
// on the same FAKE Event Mesh, both directions, same `msg` on receipt. @sap/cds sends its management
// and REST calls to https on port 443 whatever the binding says, so the fake serves HTTPS on
// 127.0.0.1:443 with a throw-away CA (NODE_EXTRA_CA_CERTS for both processes). One suite at a time
// may bind 443.
const { startFakeEventMesh } = require('./fake-event-mesh')
const { startPeer } = require('./event-mesh-helpers')
const { until } = require('./helpers')

const TOPIC = 'my/ns/1/interop/x'

describe('native-enterprise-messaging ↔ @sap/cds enterprise-messaging (REST + webhook)', () => {
  let fake
  let theirs
  let ours
  let shared
  let oursShared
  beforeAll(async () => {
    fake = await startFakeEventMesh({ https443: true, redeliveryDelay: 100 })
    const credentials = fake.binding({ https: true })
    const env = { NODE_EXTRA_CA_CERTS: fake.caFile }
    theirs = await startPeer({
      name: 'theirs',
      messaging: { kind: 'enterprise-messaging', credentials, queue: { name: 'my/ns/1/theirs' }, webhook: { waitingPeriod: 0 } },
      topics: [TOPIC],
      env
    })
    ours = await startPeer({
      name: 'ours',
      messaging: { kind: 'native-enterprise-messaging', credentials, queue: { name: 'my/ns/1/ours' }, webhook: { waitingPeriod: 0 } },
      topics: [TOPIC],
      env
    })
    // @sap/cds enterprise-messaging-shared: AMQP over wss:// through the fake's gateway, same store
    shared = await startPeer({
      name: 'shared',
      messaging: { kind: 'enterprise-messaging-shared', credentials, queue: { name: 'my/ns/1/shared' } },
      topics: [TOPIC],
      env
    })
    // ours over WebSocket (native-enterprise-messaging-shared, branch em-amqp)
    oursShared = await startPeer({
      name: 'ours-shared',
      // tls.ca: its wss:// connection does not read NODE_EXTRA_CA_CERTS yet (the HTTP client does)
      messaging: { kind: 'native-enterprise-messaging-shared', credentials, queue: { name: 'my/ns/1/native-ws' }, tls: { ca: fake.ca } },
      topics: [TOPIC],
      env
    })
    await Promise.all([theirs.ready, ours.ready, shared.ready, oursShared.ready])
    await until(() => fake.amqp.consumers.size === 2, 20000, 'the AMQP consumers of both -shared kinds')
    await until(() => fake.webhooks.get('my/ns/1/theirs')?.state === 'active' && fake.webhooks.get('my/ns/1/ours')?.state === 'active', 20000, 'both webhooks active')
  })
  afterAll(async () => {
    await theirs?.stop()
    await ours?.stop()
    await shared?.stop()
    await oursShared?.stop()
    await fake?.close()
  })

  test('the same management calls and webhook registration as @sap/cds', () => {
    const calls = q => fake.requests.filter(r => r.tls && decodeURIComponent(r.path).includes(q)).map(r => `${r.method} ${decodeURIComponent(r.path).replace(q, '<q>')} ${r.status}`)
    expect(calls('my/ns/1/ours')).toEqual(calls('my/ns/1/theirs'))
    expect(calls('my/ns/1/ours')).toEqual(['PUT /hub/rest/api/v1/management/messaging/queues/<q> 201', 'PUT /hub/rest/api/v1/management/messaging/queues/<q>/subscriptions/my/ns/1/interop/x 201', 'DELETE /messagingrest/v1/subscriptions/<q> 404'])
    const body = q => {
      const b = JSON.parse(fake.requests.find(r => r.method === 'POST' && r.path === '/messagingrest/v1/subscriptions' && r.body.includes(`"${q}"`)).body)
      b.pushConfig.endpoint = b.pushConfig.endpoint.replace(/127\.0\.0\.1:\d+/, 'host').replace(q, '<q>')
      return { ...b, name: '<q>', address: '<q>' }
    }
    expect(body('my/ns/1/ours')).toEqual(body('my/ns/1/theirs'))
  })

  test('both directions: every app receives what either sends, with the same msg', async () => {
    expect(await theirs.emit(TOPIC, { from: 'theirs' }, { 'x-h': 't' })).toEqual({ status: 200 })
    expect(await ours.emit(TOPIC, { from: 'ours' }, { 'x-h': 'o' })).toEqual({ status: 200 })
    await until(async () => (await theirs.received()).length === 2 && (await ours.received()).length === 2, 20000, 'two messages on each side')
    const shape = list => Object.fromEntries(list.map(m => [m.data.from, m]))
    const t = shape(await theirs.received())
    const o = shape(await ours.received())
    expect(o).toEqual(t)
    expect(o.theirs).toEqual({ event: TOPIC, data: { from: 'theirs' }, headers: { 'x-h': 't' } })
    // the same bytes on the wire
    const [a, b] = fake.requestsTo('/messagingrest/v1/topics/', 'POST')
    expect(b.rawPath).toBe(a.rawPath)
    expect([b.headers['content-type'], b.headers['x-qos']]).toEqual([a.headers['content-type'], a.headers['x-qos']])
    expect(JSON.parse(b.body)).toEqual({ ...JSON.parse(a.body), 'x-h': 'o', data: { from: 'ours' } })
  })

  test('a failing handler: both answer 500 and Event Mesh pushes again', async () => {
    fake.events.length = 0
    expect(await ours.emit(TOPIC, { from: 'fail', failTimes: 1 })).toEqual({ status: 200 })
    await until(async () => (await theirs.received()).some(m => m.data.from === 'fail') && (await ours.received()).some(m => m.data.from === 'fail'), 20000, 'the failing message on both sides')
    const statuses = name => fake.events.filter(e => e.kind === 'webhook-push' && e.name === name).map(e => e.status)
    expect(statuses('my/ns/1/ours')).toEqual([500, 200])
    expect(statuses('my/ns/1/theirs')).toEqual([500, 200])
  })

  test('@sap/cds enterprise-messaging-shared (AMQP over WebSocket) and ours (REST) on the same fake, both directions', async () => {
    expect(await shared.emit(TOPIC, { from: 'shared' }, { 'x-h': 's' })).toEqual({ status: 200 })
    await until(async () => (await ours.received()).some(m => m.data.from === 'shared'), 20000, 'ours receives from -shared')
    await until(async () => (await shared.received()).some(m => m.data.from === 'ours'), 20000, '-shared received ours from before')
    const o = (await ours.received()).find(m => m.data.from === 'shared')
    const s = (await shared.received()).find(m => m.data.from === 'shared')
    expect(o).toEqual(s)
    expect(o).toEqual({ event: TOPIC, data: { from: 'shared' }, headers: { 'x-h': 's' } })
    const upgrade = fake.requests.find(r => r.method === 'UPGRADE')
    expect(upgrade).toMatchObject({ status: 101, tls: true, path: '/protocols/amqp10ws' })
    expect(upgrade.headers['sec-websocket-protocol']).toBe('amqp')
    expect(upgrade.headers.authorization).toMatch(/^Bearer tok-/)
  })

  test('@sap/cds enterprise-messaging-shared ↔ native-enterprise-messaging-shared over WebSocket, and both ↔ our REST kind', async () => {
    expect(await oursShared.emit(TOPIC, { from: 'ours-shared' }, { 'x-h': 'w' })).toEqual({ status: 200 })
    const all = [theirs, ours, shared, oursShared]
    for (const from of ['ours-shared', 'shared', 'ours', 'theirs'])
      await until(async () => (await Promise.all(all.map(p => p.received()))).every(list => list.some(m => m.data.from === from)), 20000, `every app received the message from ${from}`)
    for (const from of ['ours-shared', 'shared']) {
      const seen = await Promise.all(all.map(async p => (await p.received()).find(m => m.data.from === from)))
      for (const m of seen) expect(m).toEqual(seen[0])
    }
    expect((await oursShared.received()).find(m => m.data.from === 'theirs')).toEqual({ event: TOPIC, data: { from: 'theirs' }, headers: { 'x-h': 't' } })
  })
})
