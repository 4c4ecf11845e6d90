'use strict'
// SAP Event Mesh multitenancy: a multitenant CAP app (__test__/apps/em-mt, @sap/cds-mtxs with SQLite tenant
// databases) in a child process against the FAKE Event Mesh (__test__/fake-event-mesh). Subscribing a tenant through
// cds.xt.SaasProvisioningService (as the SaaS registry does) creates the tenant's queue and subscriptions with a
// token from the tenant's subdomain; unsubscribing deletes them; the provider's queue stays as it was. The REST kind
// with a webhook also registers (and deletes) each tenant's webhook, whose pushes reach the handlers in the tenant's
// context; deployForProvider: false leaves the provider without a queue; POST /messaging/enterprise-messaging/deploy
// redeploys tenants.
// The binding's token URL is `provider.auth.fake-em.test`, which nothing resolves: CDS_NATIVE_RESOLVE (the HTTP
// client's host override, like curl --resolve) maps it and `t1-sub.auth.fake-em.test` to 127.0.0.1.
const { spawn, spawnSync } = require('node:child_process')
const path = require('node:path')
const { startFakeEventMesh } = require('./fake-event-mesh')
const { until, freePort } = require('./helpers')

const APP = path.join(__dirname, 'apps', 'em-mt')
const Q = 'my/ns/1/emapp/abcd' // $namespace/$appId (app emapp, id abcdef12-…)
const TOPICS = ['my/ns/1/mt/a', 'my/ns/1/mt/b']
const MTX = `Basic ${Buffer.from('mtx:mtx').toString('base64')}`

const HOOK = path.join(__dirname, '..', 'scripts', 'cds-matrix-hook.js')

/**
 * The environment that gives the app @sap/cds-mtxs and @cap-js/sqlite. They are not dependencies
 * of the repository (with @cap-js/sqlite there, every in-process CAP app of the @sap/cds 10 pass
 * would load a better-sqlite3 built for Node 20): the @sap/cds 10 pass has them in its matrix
 * (scripts/test-cds10.sh); otherwise they are installed once into the git-ignored .matrix/mt9,
 * next to the repository's @sap/cds 9, by scripts/matrix.sh (`npm test` does that in the background
 * before jest starts).
 */
let companions
function companionEnv() {
  if (companions) return companions
  if (process.env.CDS_MATRIX_MODULES) return (companions = {})
  const root = path.join(__dirname, '..')
  const modules = path.join(root, '.matrix', 'mt9', 'node_modules')
  const r = spawnSync('bash', [path.join(root, 'scripts', 'matrix.sh'), 'mt9'], { cwd: root, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`installing @sap/cds-mtxs and @cap-js/sqlite into ${modules} failed:\n${r.stdout}\n${r.stderr}`)
  return (companions = { CDS_COMPANION_MODULES: modules, NODE_OPTIONS: `${process.env.NODE_OPTIONS || ''} --require ${HOOK}`.trim() })
}

// The first run installs them (a few minutes where better-sqlite3 has to be compiled).
beforeAll(() => companionEnv(), 600000)

const MTX_USER = { password: 'mtx', roles: ['mtcallback', 'internal-user', 'cds.Subscriber'] }

/** Starts the MT app with `requires.messaging = messaging`; `auth` replaces the mocked auth, `url` sets cds.env.app.url (`true`: the app's own). */
async function startApp(fake, messaging, { auth, url } = {}) {
  const port = await freePort()
  const config = {
    app: { name: 'emapp', id: 'abcdef12-3456-7890', ...(url ? { url: `http://127.0.0.1:${port}` } : {}) },
    requires: {
      multitenancy: true,
      db: { kind: 'sqlite', credentials: { url: ':memory:' } },
      auth: auth || { kind: 'mocked', users: { mtx: MTX_USER, emm: { password: 'pw', roles: ['emmanagement'] } } },
      messaging
    }
  }
  const child = spawn(process.execPath, [require.resolve('@sap/cds/bin/serve.js'), '--port', String(port)], {
    cwd: APP,
    env: { ...process.env, ...companionEnv(), NODE_ENV: 'test', CDS_CONFIG: JSON.stringify(config), APP_TOPICS: JSON.stringify(TOPICS), CDS_NATIVE_RESOLVE: fake.resolve },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const app = { url: `http://127.0.0.1:${port}`, child, out: '', exited: null }
  child.stdout.on('data', d => (app.out += d))
  child.stderr.on('data', d => (app.out += d))
  child.on('exit', code => (app.exited = code ?? 'signal'))
  await until(() => app.out.includes('MT APP READY') || app.exited !== null, 60000, 'the MT app to listen')
  if (app.exited !== null) throw new Error(`the MT app exited with ${app.exited}:\n${app.out}`)
  app.call = async (method, p, body, authorization = MTX) => {
    const headers = { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) }
    const r = await fetch(`${app.url}${p}`, { method, headers, body: body && JSON.stringify(body) })
    const text = await r.text()
    return { status: r.status, text }
  }
  app.stop = async () => {
    if (app.exited !== null) return
    child.kill('SIGTERM')
    await until(() => app.exited !== null, 10000, 'the MT app to exit').catch(() => child.kill('SIGKILL'))
  }
  return app
}

const KINDS = {
  'native-enterprise-messaging-shared': fake => ({ kind: 'native-enterprise-messaging-shared', credentials: fake.binding() }),
  'native-enterprise-messaging': fake => ({ kind: 'native-enterprise-messaging', credentials: fake.binding(), inbound: 'pull' })
}

describe.each(Object.keys(KINDS))('%s with multitenancy (@sap/cds-mtxs) against a fake Event Mesh', kind => {
  let fake, app
  beforeEach(async () => {
    fake = await startFakeEventMesh({ authHost: 'provider.auth.fake-em.test', subdomains: ['t1-sub', 't2-sub'] })
    app = await startApp(fake, KINDS[kind](fake))
    // The provider's own queue, created at listening with the provider's token.
    await until(() => fake.broker.queue(Q)?.subscriptions.size === TOPICS.length, 20000, "the provider's queue")
  })
  afterEach(async () => {
    await app?.stop()
    await fake?.close()
  })

  const tenantCalls = sub => fake.requests.filter(r => r.path.startsWith(fake.managementBasePath) && r.subdomain === sub)

  test("subscribe creates the tenant's queue and subscriptions with its token; unsubscribe deletes them; the provider's stay", async () => {
    const providerToken = fake.requestsTo('/oauth/token').find(r => r.status === 200)
    expect(providerToken.headers.host).toBe(`provider.auth.fake-em.test:${fake.port}`)
    expect(providerToken.subdomain).toBeUndefined()

    const sub = await app.call('PUT', '/-/cds/saas-provisioning/tenant/t1', { subscribedTenantId: 't1', subscribedSubdomain: 't1-sub', eventType: 'CREATE' })
    expect(sub.status).toBeLessThan(300)
    await until(() => fake.tenantBroker('t1-sub').queue(Q)?.subscriptions.size === TOPICS.length, 20000, "t1's queue and subscriptions")
    expect([...fake.tenantBroker('t1-sub').queue(Q).subscriptions].sort()).toEqual(TOPICS)
    // Every call for t1 carried a token issued by t1's subdomain token URL.
    const tokenCalls = fake.requestsTo('/oauth/token').filter(r => r.subdomain === 't1-sub')
    expect(tokenCalls.length).toBeGreaterThanOrEqual(1)
    expect(tokenCalls[0].headers.host).toBe(`t1-sub.auth.fake-em.test:${fake.port}`)
    const calls = tenantCalls('t1-sub')
    expect(calls.map(r => `${r.method} ${decodeURIComponent(r.rawPath.slice(fake.managementBasePath.length))}`)).toEqual(
      expect.arrayContaining(['GET /readinessCheck', `PUT /queues/${Q}`, ...TOPICS.map(t => `PUT /queues/${Q}/subscriptions/${t}`)])
    )
    for (const r of calls) expect(r.headers.authorization).toMatch(/-t1-sub$/)
    // The SaaS registry is told that tenants need Event Mesh too.
    const deps = await app.call('GET', '/-/cds/saas-provisioning/dependencies')
    expect(JSON.parse(deps.text)).toEqual(expect.arrayContaining([{ xsappname: 'fake-em-app' }]))

    const unsub = await app.call('DELETE', '/-/cds/saas-provisioning/tenant/t1')
    expect(unsub.status).toBeLessThan(300)
    await until(() => !fake.tenantBroker('t1-sub').queue(Q), 20000, "t1's queue to be deleted")
    expect(tenantCalls('t1-sub').filter(r => r.method === 'DELETE').map(r => decodeURIComponent(r.rawPath.slice(fake.managementBasePath.length)))).toEqual([`/queues/${Q}`])
    // The provider is unaffected.
    expect([...fake.broker.queue(Q).subscriptions].sort()).toEqual(TOPICS)
    expect(fake.requests.filter(r => r.method === 'DELETE' && r.path.startsWith(fake.managementBasePath) && !r.subdomain)).toEqual([])
    expect(app.exited).toBeNull()
  })

  test("an unsubscribe without metadata finds the subdomain through cds.xt.SaasProvisioningService; an unknown tenant is no error", async () => {
    const sub = await app.call('PUT', '/-/cds/saas-provisioning/tenant/t2', { subscribedTenantId: 't2', subscribedSubdomain: 't2-sub', eventType: 'CREATE' })
    expect(sub.status).toBeLessThan(300)
    await until(() => fake.tenantBroker('t2-sub').queue(Q)?.subscriptions.size === TOPICS.length, 20000, "t2's queue")
    expect((await app.call('POST', '/test/unsubscribe', { tenant: 't2' })).status).toBe(200)
    await until(() => !fake.tenantBroker('t2-sub').queue(Q), 20000, "t2's queue to be deleted")
    expect(app.out).toMatch(/queue 'my\/ns\/1\/emapp\/abcd' of tenant 't2' deleted/)

    await app.call('POST', '/test/unsubscribe', { tenant: 'nobody' })
    await until(() => /tenant 'nobody' is not known/.test(app.out), 10000, 'the unknown tenant to be logged')
    expect([...fake.broker.queue(Q).subscriptions].sort()).toEqual(TOPICS)
    expect(app.exited).toBeNull()
  })

  test('POST /messaging/enterprise-messaging/deploy (mocked auth) brings a tenant\'s missing subscriptions back with its token', async () => {
    expect((await app.call('PUT', '/-/cds/saas-provisioning/tenant/t1', { subscribedTenantId: 't1', subscribedSubdomain: 't1-sub', eventType: 'CREATE' })).status).toBeLessThan(300)
    await until(() => fake.tenantBroker('t1-sub').queue(Q)?.subscriptions.size === TOPICS.length, 20000, "t1's queue")
    fake.tenantBroker('t1-sub').queue(Q).subscriptions.delete(TOPICS[1])
    const emm = `Basic ${Buffer.from('emm:pw').toString('base64')}`
    expect(await app.call('POST', '/messaging/enterprise-messaging/deploy', { tenants: ['t1'] }, emm)).toEqual({ status: 201, text: JSON.stringify([{ queue: Q, succeeded: ['t1'], failed: [] }]) })
    expect([...fake.tenantBroker('t1-sub').queue(Q).subscriptions].sort()).toEqual(TOPICS)
    expect((await app.call('POST', '/messaging/enterprise-messaging/deploy', { tenants: ['t1'] })).status).toBe(403) // mtx has no emmanagement
  })

  if (kind === 'native-enterprise-messaging')
    test("a tenant's emit is published with a token requested with x-zid: <tenant>; the provider's without", async () => {
      expect(await app.call('POST', '/test/emit', { tenant: 't1', event: 'my/ns/1/mt/a', data: { n: 1 } })).toEqual({ status: 200, text: '{}' })
      expect(await app.call('POST', '/test/emit', { event: 'my/ns/1/mt/a', data: { n: 2 } })).toEqual({ status: 200, text: '{}' })
      expect(await app.call('POST', '/test/emit', { tenant: 't1', event: 'my/ns/1/mt/a', data: { n: 3 } })).toEqual({ status: 200, text: '{}' })
      const posts = fake.requestsTo('/messagingrest/v1/topics/', 'POST')
      expect(posts.map(r => [JSON.parse(r.body).data.n, fake.tokens.get(r.headers.authorization.replace(/^Bearer /, '')).zid])).toEqual([
        [1, 't1'],
        [2, undefined],
        [3, 't1']
      ])
      // One token per tenant, cached: t1's was requested once, with x-zid.
      const zidTokens = fake.requestsTo('/oauth/token').filter(r => r.headers['x-zid'])
      expect(zidTokens.map(r => r.headers['x-zid'])).toEqual(['t1'])
    })
})

const basic = user => `Basic ${Buffer.from(`${user}:pw`).toString('base64')}`
const subscribe = (app, tenant) => app.call('PUT', `/-/cds/saas-provisioning/tenant/${tenant}`, { subscribedTenantId: tenant, subscribedSubdomain: `${tenant}-sub`, eventType: 'CREATE' })
// A message in a queue of the fake, as Event Mesh has it after a publish.
const put = (broker, topic, data) => broker.publish(topic, Buffer.from(JSON.stringify({ data })), { contentType: 'application/json' })
/**
 * Real (basic) authentication, so that CAP's auth runs on the webhook and deploy endpoints: Event Mesh pushes as `em`
 * (the provider) or `em-<subdomain>` (a token from that subscriber's token URL carries the tenant, which CAP's auth
 * puts into cds.context.tenant; basic users carry it as `tenant`); `emm` may call the deploy endpoint.
 */
const AUTH = {
  kind: 'basic',
  users: {
    mtx: MTX_USER,
    em: { password: 'pw', roles: ['emcallback'] },
    'em-t1-sub': { password: 'pw', roles: ['emcallback'], tenant: 't1' },
    'em-t2-sub': { password: 'pw', roles: ['emcallback'], tenant: 't2' },
    emm: { password: 'pw', roles: ['emmanagement'] }
  }
}
const pushAs = w => basic(w.tokenSubdomain ? `em-${w.tokenSubdomain}` : 'em')
const webhookKind = (fake, extra = {}) => ({ kind: 'native-enterprise-messaging', credentials: fake.binding(), webhook: { waitingPeriod: 0 }, ...extra })

describe('native-enterprise-messaging with a webhook and multitenancy against a fake Event Mesh', () => {
  let fake, app
  beforeEach(async () => {
    fake = await startFakeEventMesh({ authHost: 'provider.auth.fake-em.test', subdomains: ['t1-sub', 't2-sub'], redeliveryDelay: 100 })
    fake.pushAuthorization = pushAs
    app = await startApp(fake, webhookKind(fake), { auth: AUTH, url: true })
    await until(() => fake.webhooks.get(Q)?.state === 'active', 20000, "the provider's webhook")
  })
  afterEach(async () => {
    await app?.stop()
    await fake?.close()
  })

  const restCalls = sub => fake.requests.filter(r => r.path.startsWith('/messagingrest/v1/subscriptions') && r.subdomain === sub).map(r => `${r.method} ${decodeURIComponent(r.rawPath)}`)

  test("subscribe registers the tenant's webhook (provider's body, tenant's token URL); its pushes reach the handlers with cds.context.tenant; unsubscribe deletes it", async () => {
    expect((await subscribe(app, 't1')).status).toBeLessThan(300)
    await until(() => fake.tenantWebhooks('t1-sub').get(Q)?.state === 'active', 20000, "t1's webhook (handshake done)")
    // DELETE the old one, then POST, both with t1's token.
    expect(restCalls('t1-sub')).toEqual([`DELETE /messagingrest/v1/subscriptions/${Q}`, 'POST /messagingrest/v1/subscriptions'])
    for (const r of fake.requests.filter(r => r.path.startsWith('/messagingrest/v1/subscriptions') && r.subdomain === 't1-sub')) expect(r.headers.authorization).toMatch(/-t1-sub$/)
    const provider = fake.webhooks.get(Q).body
    const tenant = fake.tenantWebhooks('t1-sub').get(Q).body
    const tokenUrl = `http://t1-sub.auth.fake-em.test:${fake.port}/oauth/token`
    expect(provider.pushConfig.securitySchema.tokenUrl).toBe(`http://provider.auth.fake-em.test:${fake.port}/oauth/token`)
    expect(tenant).toEqual({ ...provider, pushConfig: { ...provider.pushConfig, securitySchema: { ...provider.pushConfig.securitySchema, tokenUrl } } })
    expect(tenant.pushConfig.endpoint).toBe(`${app.url}/messaging/enterprise-messaging?q=${Q}`)

    put(fake.tenantBroker('t1-sub'), TOPICS[0], { n: 1 })
    put(fake.broker, TOPICS[1], { n: 2 })
    await until(async () => JSON.parse((await app.call('GET', '/test/received')).text).length === 2, 20000, 'both pushes')
    const received = JSON.parse((await app.call('GET', '/test/received')).text)
    expect(received).toEqual(expect.arrayContaining([{ event: TOPICS[0], data: { n: 1 }, tenant: 't1' }, { event: TOPICS[1], data: { n: 2 } }]))
    expect(fake.events.filter(e => e.kind === 'webhook-push').map(e => e.status)).toEqual([200, 200])

    expect((await app.call('DELETE', '/-/cds/saas-provisioning/tenant/t1')).status).toBeLessThan(300)
    await until(() => !fake.tenantBroker('t1-sub').queue(Q), 20000, "t1's queue to be deleted")
    expect(fake.tenantWebhooks('t1-sub').has(Q)).toBe(false)
    expect(restCalls('t1-sub').slice(2)).toEqual([`DELETE /messagingrest/v1/subscriptions/${Q}`])
    expect(app.out).toMatch(/queue 'my\/ns\/1\/emapp\/abcd' of tenant 't1' deleted; webhook deleted/)
    // The provider's webhook is untouched.
    expect(fake.webhooks.get(Q).state).toBe('active')
    expect(app.exited).toBeNull()
  })

  test('POST /messaging/enterprise-messaging/deploy: 401/403 without emmanagement, 400 for a bad body, redeploys listed or all tenants (201), 500 lists the failed ones; wipeData recreates the queue', async () => {
    for (const t of ['t1', 't2']) expect((await subscribe(app, t)).status).toBeLessThan(300)
    await until(() => ['t1-sub', 't2-sub'].every(s => fake.tenantWebhooks(s).get(Q)?.state === 'active'), 20000, "both tenants' webhooks")
    const deploy = (body, user = 'emm') => app.call('POST', '/messaging/enterprise-messaging/deploy', body, user && basic(user))
    expect((await deploy({ tenants: ['t1'] }, null)).status).toBe(401)
    expect((await deploy({ tenants: ['t1'] }, 'em')).status).toBe(403)
    expect((await deploy({ tenants: 't1' })).status).toBe(400)
    expect((await deploy({ tenants: ['t1'], queues: ['no/such/queue'] })).status).toBe(400)
    expect((await deploy({ tenants: ['t1'], wipeData: 'yes' })).status).toBe(400)

    // t1's subscriptions and webhook went missing: a deploy brings them back (CONFLICT on the POST is fine).
    fake.tenantBroker('t1-sub').queue(Q).subscriptions.delete(TOPICS[0])
    fake.fail({ method: 'POST', path: /^\/messagingrest\/v1\/subscriptions$/, status: 409, body: { error: { code: 'CONFLICT', message: 'exists' } } })
    const r1 = await deploy({ tenants: ['t1'], queues: [Q] })
    expect(r1).toEqual({ status: 201, text: JSON.stringify([{ queue: Q, succeeded: ['t1'], failed: [] }]) })
    expect([...fake.tenantBroker('t1-sub').queue(Q).subscriptions].sort()).toEqual(TOPICS)

    const before = fake.requests.length
    expect(await deploy({ tenants: ['all'] })).toEqual({ status: 201, text: JSON.stringify([{ queue: Q, succeeded: ['t1', 't2'], failed: [] }]) })
    const redeployed = fake.requests.slice(before).filter(r => r.method === 'POST' && r.path === '/messagingrest/v1/subscriptions')
    expect(redeployed.map(r => r.subdomain).sort()).toEqual(['t1-sub', 't2-sub'])

    expect(await deploy({ tenants: ['t2', 'nobody'] })).toEqual({ status: 500, text: JSON.stringify([{ queue: Q, succeeded: ['t2'], failed: ['nobody'] }]) })

    // wipeData: t1's queue (with a message in it) is deleted and created again, with its subscriptions and webhook.
    const old = fake.tenantBroker('t1-sub').queue(Q)
    await until(() => fake.tenantWebhooks('t1-sub').get(Q)?.state === 'active', 20000, "t1's webhook")
    expect(await deploy({ tenants: ['t1'], wipeData: true })).toEqual({ status: 201, text: JSON.stringify([{ queue: Q, succeeded: ['t1'], failed: [] }]) })
    const fresh = fake.tenantBroker('t1-sub').queue(Q)
    expect(fresh).not.toBe(old)
    expect([...fresh.subscriptions].sort()).toEqual(TOPICS)
    expect(fake.requests.filter(r => r.method === 'DELETE' && r.subdomain === 't1-sub' && r.path.startsWith(fake.managementBasePath))).toHaveLength(1)
    await until(() => fake.tenantWebhooks('t1-sub').get(Q)?.state === 'active', 20000, "t1's new webhook")
    // The provider's queue was never touched by the deploy endpoint.
    expect(fake.requests.filter(r => r.method === 'DELETE' && r.path.startsWith(fake.managementBasePath) && !r.subdomain)).toEqual([])
    expect(app.exited).toBeNull()
  })
})

describe.each([
  ['native-enterprise-messaging-shared', fake => ({ kind: 'native-enterprise-messaging-shared', credentials: fake.binding(), deployForProvider: false })],
  ['native-enterprise-messaging', fake => webhookKind(fake, { deployForProvider: false })]
])('%s with deployForProvider: false', (kind, messaging) => {
  let fake, app
  beforeEach(async () => {
    fake = await startFakeEventMesh({ authHost: 'provider.auth.fake-em.test', subdomains: ['t1-sub'] })
    fake.pushAuthorization = pushAs
    app = await startApp(fake, messaging(fake), { auth: AUTH, url: true })
  })
  afterEach(async () => {
    await app?.stop()
    await fake?.close()
  })

  test('the provider gets no queue, subscriptions or webhook at startup; a subscribed tenant gets them; emits work', async () => {
    await until(() => /deployForProvider is false/.test(app.out), 20000, 'the log line of the provider without a queue')
    expect((await subscribe(app, 't1')).status).toBeLessThan(300)
    await until(() => fake.tenantBroker('t1-sub').queue(Q)?.subscriptions.size === TOPICS.length, 20000, "t1's queue")
    if (kind === 'native-enterprise-messaging') {
      await until(() => fake.tenantWebhooks('t1-sub').get(Q)?.state === 'active', 20000, "t1's webhook")
      put(fake.tenantBroker('t1-sub'), TOPICS[0], { n: 1 })
      await until(async () => JSON.parse((await app.call('GET', '/test/received')).text).length === 1, 20000, "t1's push")
      expect(JSON.parse((await app.call('GET', '/test/received')).text)).toEqual([{ event: TOPICS[0], data: { n: 1 }, tenant: 't1' }])
    }
    expect((await app.call('POST', '/test/emit', { event: 'my/ns/1/mt/a', data: { n: 2 } })).status).toBe(200)
    // Nothing for the provider: no management call with its token, no webhook, no queue, no consumer link.
    expect(fake.broker.queue(Q)).toBeUndefined()
    expect(fake.webhooks.size).toBe(0)
    expect(fake.requests.filter(r => (r.path.startsWith(fake.managementBasePath) || r.path.startsWith('/messagingrest/v1/subscriptions')) && !r.subdomain)).toEqual([])
    expect(fake.events.filter(e => e.kind === 'amqp-attach')).toEqual([])
    expect(app.exited).toBeNull()
  })
})
