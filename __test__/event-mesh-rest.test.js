'use strict'
// native-enterprise-messaging (SAP Event Mesh over HTTP REST) in CAP child processes against the FAKE
// Event Mesh (__test__/fake-event-mesh): provisioning, publish statuses, webhook pushes, pull mode,
// token and management outages.
const { startFakeEventMesh } = require('./fake-event-mesh')
const { startPeer } = require('./event-mesh-helpers')
const { until, freePort } = require('./helpers')

const Q = 'my/ns/1/emapp/abcd' // $namespace/$appId of the peer (app emapp, id abcdef12-…)
const QE = encodeURIComponent(Q)

describe('native-enterprise-messaging against a fake Event Mesh', () => {
  let fake
  const peers = []
  const peer = async opts => {
    const p = await startPeer(opts)
    peers.push(p)
    await p.ready
    return p
  }
  const kind = (extra = {}) => ({ kind: 'native-enterprise-messaging', credentials: fake.binding(), webhook: { waitingPeriod: 0 }, ...extra })
  beforeEach(async () => {
    fake = await startFakeEventMesh({ redeliveryDelay: 100 })
  })
  afterEach(async () => {
    for (const p of peers.splice(0)) await p.stop()
    await fake.close()
  })

  test('queue and subscriptions are created; a second start diffs them (GET, DELETE obsolete, PUT missing)', async () => {
    const a = await peer({ messaging: kind({ inbound: 'pull', queue: { maxRedeliveryCount: 5 } }), topics: ['my/ns/1/t/a', 'my/ns/1/t/b'] })
    await until(() => fake.broker.queue(Q)?.subscriptions.size === 2, 10000, 'two subscriptions')
    const put = fake.requestsTo(`/queues/${QE}`, 'PUT').filter(r => !r.path.includes('/subscriptions'))
    expect(put).toHaveLength(1)
    expect(put[0].status).toBe(201)
    expect(JSON.parse(put[0].body)).toEqual({ maxRedeliveryCount: 5 })
    expect(fake.broker.queue(Q).config).toEqual({ maxRedeliveryCount: 5 })
    expect(fake.requestsTo('/subscriptions', 'GET')).toHaveLength(0) // created: no diff needed
    await a.stop()

    fake.requests.length = 0
    await peer({ messaging: kind({ inbound: 'pull' }), topics: ['my/ns/1/t/b', 'my/ns/1/t/c'] })
    await until(() => fake.broker.queue(Q).subscriptions.has('my/ns/1/t/c') && !fake.broker.queue(Q).subscriptions.has('my/ns/1/t/a'), 10000, 'the diff')
    expect(fake.requestsTo(`/queues/${QE}`, 'PUT')[0].status).toBe(200)
    expect(fake.requestsTo(`/queues/${QE}/subscriptions`, 'GET')).toHaveLength(1)
    expect(fake.requestsTo('/subscriptions/', 'DELETE').map(r => decodeURIComponent(r.path.split('/').pop()))).toEqual(['my/ns/1/t/a'])
    expect(fake.requestsTo(`/queues/${QE}/subscriptions/`, 'PUT').map(r => decodeURIComponent(r.path.split('/').pop()))).toEqual(['my/ns/1/t/c'])
    expect([...fake.broker.queue(Q).subscriptions].sort()).toEqual(['my/ns/1/t/b', 'my/ns/1/t/c'])
  })

  test('publish: POST …/topics/{topic}/messages with x-qos 1, the content-type rule, one cached token', async () => {
    const p = await peer({ messaging: kind() })
    expect(await p.emit('my/ns/1/x y', { n: 1 }, { h: 'v' })).toEqual({ status: 200 })
    expect(await p.emit('my/ns/1/ce', { n: 2 }, { id: 'e1', source: '/s', specversion: '1.0', type: 't' })).toEqual({ status: 200 })
    const posts = fake.requestsTo('/messagingrest/v1/topics/', 'POST')
    expect(posts.map(r => r.rawPath)).toEqual(['/messagingrest/v1/topics/my%2Fns%2F1%2Fx%20y/messages', '/messagingrest/v1/topics/my%2Fns%2F1%2Fce/messages'])
    expect(posts.map(r => r.headers['x-qos'])).toEqual(['1', '1'])
    expect(posts.map(r => r.headers['content-type'])).toEqual(['application/json', 'application/cloudevents+json'])
    expect(JSON.parse(posts[0].body)).toEqual({ h: 'v', data: { n: 1 } }) // @sap/cds's body: {...headers, data}
    expect(fake.requestsTo('/oauth/token')).toHaveLength(1)
  })

  test('publish statuses: 400/403/404/413 unrecoverable, 401 once → new token and success, 429/503 with retryAfter', async () => {
    const p = await peer({ messaging: kind() })
    for (const status of [400, 403, 404, 413]) {
      fake.fail({ method: 'POST', path: '/topics/', status })
      const r = await p.emit('my/ns/1/s', { status })
      expect(r).toMatchObject({ status: 500, code: 'REJECTED', unrecoverable: true })
      expect(r.message).toContain(`HTTP ${status}`)
    }
    const tokensBefore = fake.requestsTo('/oauth/token').length
    fake.fail({ method: 'POST', path: '/topics/', status: 401 })
    expect(await p.emit('my/ns/1/s', { status: 401 })).toEqual({ status: 200 })
    expect(fake.requestsTo('/oauth/token').length).toBe(tokensBefore + 1)
    fake.fail({ method: 'POST', path: '/topics/', status: 429, retryAfter: 2 })
    expect(await p.emit('my/ns/1/s', { status: 429 })).toMatchObject({ status: 500, code: 'CONNECTION_FAILED', unrecoverable: false, retryAfter: 2000 })
    fake.fail({ method: 'POST', path: '/topics/', status: 503 })
    expect(await p.emit('my/ns/1/s', { status: 503 })).toMatchObject({ status: 500, code: 'CONNECTION_FAILED', unrecoverable: false, retryAfter: 1000 })
    // a reset connection (the HTTP client retries once on a fresh connection: reset both)
    fake.fail({ method: 'POST', path: '/topics/', destroy: true, times: 2 })
    expect(await p.emit('my/ns/1/s', { status: 'reset' })).toMatchObject({ status: 500, code: 'CONNECTION_FAILED', unrecoverable: false })
    // after all that, publishing works and only the successful ones reached the broker
    expect(await p.emit('my/ns/1/s', { status: 'ok' })).toEqual({ status: 200 })
    expect(fake.broker.published.map(m => JSON.parse(m.body).data.status)).toEqual([401, 'ok'])
    expect(p.exited).toBeNull()
  })

  test('webhook: registered after the waiting period (DELETE + POST with @sap/cds body), handshake, 200 / 500 and redelivery', async () => {
    const p = await peer({ messaging: kind({ webhook: { waitingPeriod: 300 } }), topics: ['my/ns/1/w/ok'] })
    await until(() => fake.webhooks.get(Q)?.state === 'active', 10000, 'an active webhook')
    const [del] = fake.requestsTo('/messagingrest/v1/subscriptions/', 'DELETE')
    expect(del.rawPath).toBe(`/messagingrest/v1/subscriptions/${QE}`)
    const reg = JSON.parse(fake.requestsTo('/messagingrest/v1/subscriptions', 'POST')[0].body)
    expect(reg).toEqual({
      name: Q,
      address: `queue:${Q}`,
      qos: 1,
      pushConfig: {
        type: 'webhook',
        endpoint: `${p.url}/messaging/enterprise-messaging?q=${Q}`,
        exemptHandshake: false,
        defaultContentType: 'application/json',
        securitySchema: { type: 'oauth2', grantType: 'client_credentials', clientId: 'em-client', clientSecret: 'em-secret', tokenUrl: `${fake.url}/oauth/token` }
      }
    })
    expect(fake.events.find(e => e.kind === 'webhook-handshake')).toMatchObject({ status: 200, allowed: 'fake-event-mesh.localhost' })
    // registration waited for the waiting period after provisioning
    const provisioned = fake.requestsTo(`/queues/${QE}/subscriptions/`, 'PUT')[0].t
    expect(del.t - provisioned).toBeGreaterThanOrEqual(250)

    expect(await p.emit('my/ns/1/w/ok', { n: 1 }, { h: 1 })).toEqual({ status: 200 })
    expect(await p.emit('my/ns/1/w/ok', { n: 2, failTimes: 2 })).toEqual({ status: 200 })
    await until(async () => (await p.received()).length === 2, 15000, 'both messages')
    const got = await p.received()
    expect(got[0]).toMatchObject({ event: 'my/ns/1/w/ok', data: { n: 1 }, headers: { h: 1 } })
    expect(got[1].data).toEqual({ n: 2, failTimes: 2 })
    const pushes = fake.events.filter(e => e.kind === 'webhook-push').map(e => e.status)
    expect(pushes).toEqual([200, 500, 500, 200])
  })

  test('webhook: unknown queue → 200 and a warning; no x-address → 400', async () => {
    const p = await peer({ messaging: kind(), topics: ['my/ns/1/w/x'] })
    await until(() => fake.webhooks.get(Q)?.state === 'active', 10000, 'an active webhook')
    const r = await fetch(`${p.url}/messaging/enterprise-messaging?q=other`, { method: 'POST', headers: { 'x-address': 'topic:a/b', 'content-type': 'application/json' }, body: '{"data":1}' })
    expect(r.status).toBe(200)
    await until(() => p.out.includes("for queue 'other', which no service of this app consumes"), 5000, 'the warning')
    const r2 = await fetch(`${p.url}/messaging/enterprise-messaging?q=${encodeURIComponent(Q)}`, { method: 'POST', body: '{}' })
    expect(r2.status).toBe(400)
  })

  test('pull mode: consumed with …/consumption, acknowledged after success, retried in process, dead-lettered to deadMsgQueue', async () => {
    const dlq = 'my/ns/1/dead'
    fake.broker.putQueue(dlq, {})
    const p = await peer({ messaging: kind({ inbound: 'pull', pull: { interval: 100 }, maxAttempts: 2, retryDelay: 50, queue: { deadMsgQueue: '$namespace/dead' } }), topics: ['my/ns/1/p/a'] })
    await until(() => fake.broker.queue(Q)?.subscriptions.size === 1, 10000, 'the subscription')
    expect(await p.emit('my/ns/1/p/a', { n: 1 })).toEqual({ status: 200 })
    expect(await p.emit('my/ns/1/p/a', { n: 2, failTimes: 1 })).toEqual({ status: 200 })
    expect(await p.emit('my/ns/1/p/a', { n: 3, failTimes: 9 })).toEqual({ status: 200 })
    await until(async () => (await p.received()).length === 2, 15000, 'two messages')
    await until(() => fake.broker.queue(dlq).ready.length === 1, 10000, 'the dead letter')
    expect((await p.received()).map(m => m.data.n).sort()).toEqual([1, 2])
    expect(JSON.parse(fake.broker.queue(dlq).ready[0].body.toString()).data).toEqual({ n: 3, failTimes: 9 })
    await until(() => fake.broker.queue(Q).depth === 0, 5000, 'every message acknowledged')
    expect(fake.requestsTo('/acknowledgement', 'POST').filter(r => r.status === 200)).toHaveLength(3)
    expect(fake.requestsTo('/consumption', 'POST').every(r => r.headers['x-qos'] === '1')).toBe(true)
  })

  test('token endpoint down at startup: the app starts, emits fail with TOKEN_FAILED, then work once it is back', async () => {
    fake.tokenMode = '503'
    const p = await peer({ messaging: kind({ inbound: 'pull' }), topics: ['my/ns/1/t/down'] })
    const r = await p.emit('my/ns/1/t/down', { n: 1 })
    expect(r).toMatchObject({ status: 500, code: 'TOKEN_FAILED' })
    expect(r.message).toMatch(/em-client/)
    expect(r.message).not.toMatch(/em-secret/)
    await until(() => /cannot provision the Event Mesh queue/.test(p.out), 10000, 'the provisioning error in the log')
    fake.tokenMode = 'ok'
    await until(async () => (await p.emit('my/ns/1/t/down', { n: 2 })).status === 200, 20000, 'a successful emit')
    await until(() => fake.broker.queue(Q)?.subscriptions.size === 1, 30000, 'the queue after all')
    expect(p.exited).toBeNull()
    expect(p.out).not.toMatch(/em-secret/)
  })

  test('management refusing connections: no crash, publishing still works', async () => {
    const closed = await freePort()
    const credentials = fake.binding()
    credentials.management[0].uri = `http://127.0.0.1:${closed}`
    const p = await peer({ messaging: { kind: 'native-enterprise-messaging', credentials, inbound: 'pull', maxRetries: 0 }, topics: ['my/ns/1/t/m'] })
    await until(() => /cannot provision the Event Mesh queue/.test(p.out), 15000, 'the provisioning error')
    expect(p.out).toMatch(/cannot reach http:\/\/127\.0\.0\.1:\d+/)
    expect(await p.emit('my/ns/1/t/m', { n: 1 })).toEqual({ status: 200 })
    expect(p.exited).toBeNull()
  })

  test('webhook secured by CAP auth: 401 anonymous, 403 without emcallback, handshake and pushes with it', async () => {
    const basic = (u, pw = 'pw') => 'Basic ' + Buffer.from(`${u}:${pw}`).toString('base64')
    fake.pushAuthorization = basic('em')
    const auth = { kind: 'basic', users: { em: { password: 'pw', roles: ['emcallback'] }, nobody: { password: 'pw', roles: [] } } }
    const p = await peer({ messaging: kind(), requires: { auth }, topics: ['my/ns/1/sec/a'] })
    await until(() => fake.webhooks.get(Q)?.state === 'active', 10000, 'an active webhook')
    const url = `${p.url}/messaging/enterprise-messaging?q=${encodeURIComponent(Q)}`
    const options = headers => fetch(url, { method: 'OPTIONS', headers: { 'webhook-request-origin': 'x.example', ...headers } })
    expect((await options({})).status).toBe(401)
    expect((await options({ authorization: basic('nobody') })).status).toBe(403)
    const ok = await options({ authorization: basic('em') })
    expect(ok.status).toBe(200)
    expect(ok.headers.get('webhook-allowed-origin')).toBe('x.example')
    const post = await fetch(url, { method: 'POST', headers: { authorization: basic('nobody'), 'x-address': 'topic:my/ns/1/sec/a', 'content-type': 'application/json' }, body: '{"data":{"forged":true}}' })
    expect(post.status).toBe(403)
    expect(await p.emit('my/ns/1/sec/a', { n: 1 })).toEqual({ status: 200 })
    await until(async () => (await p.received()).length === 1, 10000, 'the pushed message')
    // (mocked users carry no tenant without multitenancy, so the tenant is not asserted here)
    expect(await p.received()).toEqual([{ event: 'my/ns/1/sec/a', data: { n: 1 }, headers: {} }])
  })

  test('deployForProvider: false without multitenancy does not apply: the queue, its subscriptions and the webhook are created', async () => {
    await peer({ messaging: kind({ deployForProvider: false }), topics: ['my/ns/1/t/dfp'] })
    await until(() => fake.broker.queue(Q)?.subscriptions.has('my/ns/1/t/dfp') && fake.webhooks.get(Q)?.state === 'active', 10000, 'the queue and the webhook')
  })

  test('native-event-mesh: label event-mesh-message-client and managementBasePath /sap-event-mesh/rest/api/v1 (honoured by the REST kind too)', async () => {
    await fake.close()
    fake = await startFakeEventMesh({ managementBasePath: '/sap-event-mesh/rest/api/v1' })
    await peer({
      messaging: { kind: 'native-event-mesh', inbound: 'pull' },
      env: { VCAP_SERVICES: JSON.stringify({ 'event-mesh-message-client': [{ name: 'em', label: 'event-mesh-message-client', tags: [], credentials: fake.binding() }] }) },
      topics: ['my/ns/1/em/a']
    })
    await until(() => fake.broker.queue(Q)?.subscriptions.has('my/ns/1/em/a'), 10000, 'the subscription')
    expect(fake.requestsTo('/sap-event-mesh/rest/api/v1/queues/', 'PUT').length).toBe(2)
    expect(fake.requestsTo('/hub/')).toHaveLength(0)
  })

  test('token endpoint refusing the credentials (401) at startup: no exit, TOKEN_FAILED, no secret in the log', async () => {
    fake.tokenMode = '401'
    const p = await peer({ messaging: kind({ inbound: 'pull' }), topics: ['my/ns/1/t/401'] })
    const r = await p.emit('my/ns/1/t/401', { n: 1 })
    expect(r).toMatchObject({ status: 500, code: 'TOKEN_FAILED' })
    await until(() => /cannot provision the Event Mesh queue/.test(p.out), 10000, 'the provisioning error')
    expect(p.exited).toBeNull()
    expect(p.out + r.message).not.toMatch(/em-secret|tok-\d/)
  })

  test('management refusing connections with the default retries: emits wait for the provisioning at most 10 s after it started', async () => {
    const closed = await freePort()
    const credentials = fake.binding()
    credentials.management[0].uri = `http://127.0.0.1:${closed}`
    const p = await peer({ messaging: { kind: 'native-enterprise-messaging', credentials, inbound: 'pull' }, topics: ['my/ns/1/t/slow'] })
    const t0 = Date.now()
    expect(await p.emit('my/ns/1/t/slow', { n: 1 })).toEqual({ status: 200 })
    expect(Date.now() - t0).toBeLessThan(12000)
    await new Promise(r => setTimeout(r, Math.max(0, 10500 - (Date.now() - t0))))
    const t1 = Date.now()
    expect(await p.emit('my/ns/1/t/slow', { n: 2 })).toEqual({ status: 200 })
    expect(Date.now() - t1).toBeLessThan(3000)
    expect(p.exited).toBeNull()
  }, 40000)

  test('management answering 429 with Retry-After, then 503: the queue is created after waiting as told', async () => {
    fake.fail({ method: 'PUT', path: `/queues/${QE}`, status: 429, retryAfter: 1 })
    fake.fail({ method: 'PUT', path: `/queues/${QE}`, status: 503, retryAfter: 1 })
    await peer({ messaging: kind({ inbound: 'pull' }), topics: ['my/ns/1/t/429'] })
    await until(() => fake.broker.queue(Q)?.subscriptions.has('my/ns/1/t/429'), 15000, 'the subscription')
    const puts = fake.requestsTo(`/queues/${QE}`, 'PUT').filter(r => !r.path.includes('/subscriptions'))
    expect(puts.map(r => r.status)).toEqual([429, 503, 201])
    expect(puts[1].t - puts[0].t).toBeGreaterThanOrEqual(950)
    expect(puts[2].t - puts[1].t).toBeGreaterThanOrEqual(950)
  })
})
