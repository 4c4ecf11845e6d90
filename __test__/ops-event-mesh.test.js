'use strict'
// `doctor` against the native Event Mesh kinds over AMQP 1.0 on WebSocket, with the FAKE Event Mesh
// of __test__/fake-event-mesh (token endpoint, WS gateway with an AMQP front end): the CLI's probes
// fetch a bearer with the binding's OAuth2 client, as the app does.
const { cli, killAll } = require('./ops-helpers')
const { startFakeEventMesh } = require('./fake-event-mesh')

const BASE = '/sap-event-mesh/rest/api/v1'
const NS = `cnm/ops${process.pid}/1`
const QUEUE = `${NS}/ops-doctor`

let fake
beforeAll(async () => {
  fake = await startFakeEventMesh({ managementBasePath: BASE })
})
afterAll(async () => {
  killAll()
  await fake?.close()
})

const service = (kind, credentials = fake.binding({ namespace: NS })) => ({ kind, credentials, queue: { name: QUEUE } })
const tokenRequests = () => fake.requests.filter(r => r.method === 'POST' && r.path.includes('/oauth/token')).length

test.each(['native-event-mesh-shared', 'native-enterprise-messaging-shared'])('%s: doctor connects through the WS gateway with a bearer of the binding and is green', async kind => {
  fake.broker.putQueue(QUEUE)
  const tokens = tokenRequests()
  const ok = await cli(['doctor'], service(kind))
  expect(ok.stdout).toContain(`messaging  (${kind})`)
  expect(ok.stdout).toMatch(/broker: +ws:\/\/127\.0\.0\.1:\d+\/protocols\/amqp10ws/)
  expect(ok.stdout).toMatch(/contract: +at-least-once via AMQP 1\.0 .*profile event-mesh/)
  expect(ok.stdout).toContain("dead letter queue:  none: dead letters of profile 'event-mesh' are in the dead-message queue configured for queue")
  expect(ok.stdout).toContain('✔ ok')
  expect(ok.code).toBe(0)
  expect(tokenRequests()).toBeGreaterThan(tokens)
  // every WebSocket upgrade of the CLI carried a bearer
  expect(fake.requests.filter(r => r.path.includes('/protocols/amqp10ws')).every(r => /^Bearer tok-/.test(r.headers.authorization))).toBe(true)
  const dl = await cli(['dead-letters', 'list'], service(kind))
  expect(dl.code).toBe(1)
  expect(dl.stderr).toContain("inspect them with the broker's tools")
}, 60000)

test('native-event-mesh-shared: doctor red on a wrong client secret, with the OAuth2 finding and no secret in the output', async () => {
  const credentials = fake.binding({ namespace: NS })
  for (const m of credentials.messaging) m.oa2.clientsecret = 'not-the-secret'
  const r = await cli(['doctor'], service('native-event-mesh-shared', credentials))
  expect(r.code).toBe(1)
  expect(r.stdout).toContain('→ check the OAuth2 client (token endpoint, client id and secret or certificate) of the binding')
  expect(r.stdout + r.stderr).not.toContain('not-the-secret')
}, 30000)

test('native-mqtt-messaging with an Event Mesh binding: dead letters are not retained unless deadLetterRetain says so', async () => {
  const credentials = fake.binding({ namespace: NS })
  const mqtt = extra => ({ kind: 'native-mqtt-messaging', credentials, queue: 'ops-em-mqtt', ...extra })
  const r = await cli(['doctor'], mqtt())
  expect(r.stdout).toMatch(/contract: .*then the message goes to dead-letter\/ops-em-mqtt\/<topic>\/<id> \(not retained\)/)
  const on = await cli(['doctor'], mqtt({ deadLetterRetain: true }))
  expect(on.stdout).toMatch(/contract: .*\(retained\)/)
}, 30000)
