'use strict'
// native-event-mesh-shared with a mutual-TLS binding (uaa.certificate, uaa.key, uaa.certurl; no client
// secrets), end to end: the FAKE Event Mesh of __test__/fake-event-mesh serves its token endpoint,
// management API and AMQP-over-WebSocket gateway over HTTPS that requires a client certificate from a
// throw-away CA made here with openssl. The server's own CA is trusted through NODE_EXTRA_CA_CERTS,
// as Node does. Real processes on both ends.
const { RUN, spawnPeer, range } = require('./amqp-helpers')
const { until } = require('./helpers')
const { startPeer } = require('./event-mesh-helpers')
const { startFakeEventMesh } = require('./fake-event-mesh')
const { throwAwayCa } = require('./fake-event-mesh/tls')

const NS = `cnm/mtls${process.pid}/1`
const APP = { application_name: `emtls${process.pid}`, application_id: 'abcdef12-3456-7890-abcd-ef1234567890' }
const QUEUE = `${NS}/${APP.application_name}/abcd`
const CLIENT = 'em-client'

let fake
let clientCa
let otherCa
let saved
beforeAll(async () => {
  clientCa = throwAwayCa('em-mtls-client-ca')
  otherCa = throwAwayCa('em-mtls-untrusted-ca')
  fake = await startFakeEventMesh({ managementBasePath: '/sap-event-mesh/rest/api/v1', mtls: { ca: clientCa.ca } })
  saved = { vcap: process.env.VCAP_APPLICATION, extra: process.env.NODE_EXTRA_CA_CERTS }
  process.env.VCAP_APPLICATION = JSON.stringify(APP)
  process.env.NODE_EXTRA_CA_CERTS = fake.mtlsCaFile // the peers trust the fake's server CA like Node does
})
afterAll(async () => {
  for (const [k, v] of [['VCAP_APPLICATION', saved?.vcap], ['NODE_EXTRA_CA_CERTS', saved?.extra]]) {
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
  await fake?.close()
  clientCa?.remove()
  otherCa?.remove()
})

const service = (credentials, extra = {}) => ({
  kind: 'native-event-mesh-shared',
  managementBasePath: '/sap-event-mesh/rest/api/v1',
  credentials,
  sendTimeout: 4000,
  connection: { reconnectDelay: 100, maxReconnectDelay: 1000 },
  ...extra
})
const noSecretIn = (output, ...secrets) => {
  expect(output).not.toMatch(/PRIVATE KEY/)
  expect(output).not.toMatch(/em-secret/)
  for (const s of secrets) expect(output).not.toContain(s.trim().split('\n')[1]) // a line of the PEM body
}

describe('native-event-mesh-shared with a mutual-TLS binding against the fake Event Mesh', () => {
  test('tokens come from uaa.certurl with the client certificate (no secret); queue, subscription and WebSocket work; messages flow', async () => {
    const id = clientCa.client(CLIENT)
    const creds = fake.mtlsBinding({ namespace: NS, certificate: id.cert, key: id.key })
    const topic = `${NS}/ce/mtls/${RUN}`
    const before = fake.requests.length
    const receiver = spawnPeer('receive', service(creds), { n: 50, topic, readyAtStart: true })
    await receiver.ready
    await until(() => fake.broker.queue(QUEUE)?.subscriptions.has(topic), 20000, 'queue and subscription over mutual TLS')
    const sent = await spawnPeer('emit', service(creds), { n: 50, topic }).done
    expect(sent).toMatchObject({ emitted: 50, failed: 0 })
    const got = await receiver.done
    expect(got.ids).toEqual(range(0, 50))
    expect(got.dup).toBe(0)

    const seen = fake.requests.slice(before)
    const tokenCalls = seen.filter(r => r.path === '/oauth/token')
    expect(tokenCalls.length).toBeGreaterThan(0)
    for (const r of tokenCalls) {
      expect(r).toMatchObject({ tls: true, status: 200, clientCert: CLIENT })
      expect(r.headers.authorization).toBeUndefined() // no Basic: the certificate authenticates
      const form = new URLSearchParams(r.body)
      expect(form.get('client_id')).toBe(CLIENT)
      expect(form.has('client_secret')).toBe(false)
    }
    // Management and the WebSocket upgrades went to the mutual-TLS server with the certificate and a bearer from it.
    const upgrades = seen.filter(r => r.method === 'UPGRADE')
    expect(upgrades.length).toBeGreaterThanOrEqual(2)
    for (const r of upgrades) expect(r).toMatchObject({ tls: true, status: 101, clientCert: CLIENT })
    const mgmt = seen.filter(r => r.path.startsWith('/sap-event-mesh/'))
    expect(mgmt.length).toBeGreaterThan(0)
    for (const r of mgmt) expect(r.headers.authorization).toMatch(/^Bearer tok-/)
    noSecretIn(got.output + sent.output, id.key)
  }, 60000)

  test('native-enterprise-messaging (REST): token, provisioning, publish and pull over mutual TLS', async () => {
    const id = clientCa.client(CLIENT)
    const creds = fake.mtlsBinding({ namespace: NS, certificate: id.cert, key: id.key })
    const topic = `${NS}/rest/${RUN}`
    const queue = `${NS}/emapp/abcd` // $namespace/$appId of the em-peer app
    const before = fake.requests.length
    const p = await startPeer({ messaging: { kind: 'native-enterprise-messaging', managementBasePath: '/sap-event-mesh/rest/api/v1', credentials: creds, inbound: 'pull', pull: { interval: 100 } }, topics: [topic] })
    try {
      await p.ready
      await until(() => fake.broker.queue(queue)?.subscriptions.has(topic), 15000, 'the REST kind\'s queue and subscription')
      for (let n = 0; n < 5; n++) expect(await p.emit(topic, { n })).toEqual({ status: 200 })
      await until(async () => (await p.received()).length === 5, 15000, 'five messages pulled')
      expect((await p.received()).map(m => m.data.n).sort()).toEqual([0, 1, 2, 3, 4])
      const seen = fake.requests.slice(before)
      const posts = seen.filter(r => r.path.includes('/topics/') && r.method === 'POST')
      expect(posts).toHaveLength(5)
      for (const r of [...posts, ...seen.filter(r => r.path === '/oauth/token')]) expect(r).toMatchObject({ tls: true, clientCert: CLIENT })
      for (const r of seen.filter(r => r.path === '/oauth/token')) expect(new URLSearchParams(r.body).has('client_secret')).toBe(false)
      noSecretIn(p.out, id.key)
      expect(p.out).not.toMatch(/is not known and is ignored/) // inbound, pull, managementBasePath are the kind's own options
    } finally {
      await p.stop()
    }
  }, 60000)

  test('a client certificate from an untrusted CA: emits fail with TOKEN_FAILED saying what to check; no crash, no key in the output', async () => {
    const bad = otherCa.client(CLIENT)
    const creds = fake.mtlsBinding({ namespace: NS, certificate: bad.cert, key: bad.key })
    const refusedBefore = fake.events.filter(e => e.kind === 'mtls-refused').length
    const result = await spawnPeer('emit', service(creds, { queue: { name: `${NS}/bad/${RUN}` } }), { n: 3, topic: `${NS}/ce/bad/${RUN}` }).done
    expect(result).toMatchObject({ emitted: 0, failed: 3, codes: { TOKEN_FAILED: 3 } })
    expect(result.output).toMatch(/cannot get an OAuth token for client 'em-client' at token endpoint https:\/\/127\.0\.0\.1:\d+\/oauth\/token/)
    expect(result.output).toMatch(/uaa\.certurl/)
    expect(result.output).toMatch(/the server refused it \(check uaa\.certificate and uaa\.key/)
    expect(fake.events.filter(e => e.kind === 'mtls-refused').length).toBeGreaterThan(refusedBefore)
    noSecretIn(result.output, bad.key)
  }, 30000)

  test('no client certificate at all (a secret-only binding against the mutual-TLS endpoint): TOKEN_FAILED, no crash, no secret in the output', async () => {
    const creds = fake.mtlsBinding({ namespace: NS }) // clientsecret, no uaa
    const result = await spawnPeer('emit', service(creds, { queue: { name: `${NS}/nocert/${RUN}` } }), { n: 3, topic: `${NS}/ce/nocert/${RUN}` }).done
    expect(result).toMatchObject({ emitted: 0, failed: 3, codes: { TOKEN_FAILED: 3 } })
    expect(result.output).toMatch(/cannot get an OAuth token for client 'em-client'/)
    noSecretIn(result.output)
  }, 30000)

  test('uaa.certificate without uaa.key is refused at start with INVALID_CONFIG naming what is missing', async () => {
    const id = clientCa.client(CLIENT)
    const creds = fake.mtlsBinding({ namespace: NS, certificate: id.cert, key: id.key })
    delete creds.uaa.key
    for (const m of creds.messaging) delete m.oa2.clientsecret
    const err = await spawnPeer('emit', service(creds), { n: 1, topic: `${NS}/ce/nokey/${RUN}` }).done.catch(e => e)
    expect(String(err.message)).toMatch(/INVALID_CONFIG/)
    expect(String(err.message)).toMatch(/uaa\.certificate\/uaa\.key/)
    expect(String(err.message)).not.toMatch(/BEGIN CERTIFICATE|PRIVATE KEY/)
  }, 30000)
})
