'use strict'
// native-event-mesh-shared (AMQP 1.0 over WebSocket with OAuth2, management API) against the FAKE
// Event Mesh of __test__/fake-event-mesh (token endpoint, management API, WS gateway with an AMQP
// front end and Event Mesh addressing), across real processes.
const { RUN, spawnPeer, range } = require('./amqp-helpers')
const { until } = require('./helpers')
const { startFakeEventMesh } = require('./fake-event-mesh')

const BASE = '/sap-event-mesh/rest/api/v1'
const NS = `cnm/t${process.pid}/1`
const APP = { application_name: `emapp${process.pid}`, application_id: 'abcdef12-3456-7890-abcd-ef1234567890' }
const QUEUE = `${NS}/${APP.application_name}/abcd`

let fake
let vcap
beforeAll(async () => {
  fake = await startFakeEventMesh({ managementBasePath: BASE })
  vcap = process.env.VCAP_APPLICATION
  process.env.VCAP_APPLICATION = JSON.stringify(APP)
})
afterAll(async () => {
  if (vcap === undefined) delete process.env.VCAP_APPLICATION
  else process.env.VCAP_APPLICATION = vcap
  await fake?.close()
})

const service = (extra = {}) => ({
  kind: 'native-event-mesh-shared',
  credentials: fake.binding({ namespace: NS }),
  sendTimeout: 5000,
  connection: { reconnectDelay: 100, maxReconnectDelay: 1000 },
  ...extra
})
const mgmt = (method, part) => fake.requests.filter(r => r.method === method && r.path.startsWith(BASE) && r.path.includes(part))
const subscribed = (topic, queue = QUEUE) => fake.broker.queue(queue)?.subscriptions.has(topic)
const attached = () => fake.events.some(e => e.kind === 'amqp-attach' && e.ok && e.source === `queue:${QUEUE}`)

describe('native-event-mesh-shared against the fake Event Mesh', () => {
  test('first start creates the queue ($namespace/$appId) and its subscription, then consumes; emits from another process arrive', async () => {
    const topic = `${NS}/ce/first/${RUN}`
    const receiver = spawnPeer('receive', service(), { n: 200, topic, readyAtStart: true })
    await receiver.ready
    await until(() => subscribed(topic) && attached(), 20000, 'queue, subscription and consumer link')
    const put = mgmt('PUT', `/queues/${encodeURIComponent(QUEUE)}`)
    expect(put[0].path).toBe(`${BASE}/queues/${encodeURIComponent(QUEUE)}`)
    const sent = await spawnPeer('emit', service(), { n: 200, topic }).done
    expect(sent).toMatchObject({ emitted: 200, failed: 0 })
    const got = await receiver.done
    expect(got.ids).toEqual(range(0, 200))
    expect(got.dup).toBe(0)
    expect(got.output).toMatch(`Event Mesh queue '${QUEUE}' created`)
    // Every management call and every upgrade carried a bearer from the token endpoint.
    expect(fake.requests.filter(r => r.path.startsWith(BASE)).every(r => /^Bearer tok-/.test(r.headers.authorization))).toBe(true)
  }, 60000)

  test('second start with other subscriptions: the queue exists, obsolete subscriptions are deleted, missing ones created', async () => {
    const old = `${NS}/ce/first/${RUN}`
    const topic = `${NS}/ce/second/${RUN}`
    const before = { get: mgmt('GET', '/subscriptions').length, del: mgmt('DELETE', '/subscriptions/').length }
    const receiver = spawnPeer('receive', service(), { n: 5, topic, readyAtStart: true })
    await receiver.ready
    await until(() => subscribed(topic) && !subscribed(old), 20000, 'subscriptions diffed')
    expect(mgmt('GET', '/subscriptions').length).toBe(before.get + 1)
    expect(mgmt('DELETE', '/subscriptions/').length).toBe(before.del + 1)
    await spawnPeer('emit', service(), { n: 5, topic }).done
    const got = await receiver.done
    expect(got.ids).toEqual(range(0, 5))
    expect(got.output).toMatch(`Event Mesh queue '${QUEUE}' exists`)
    expect(got.output).toMatch('obsolete subscriptions deleted')
  }, 60000)

  test('token endpoint down at startup: the app starts, logs TOKEN_FAILED, emits fail with the code, and it recovers once tokens come back', async () => {
    const queue = `${NS}/down/${RUN}`
    const topic = `${NS}/ce/down/${RUN}`
    fake.tokenMode = '503'
    try {
      // A fresh client id, so no token cached anywhere helps.
      const emitted = await spawnPeer('emit', service({ queue: { name: queue } }), { n: 3, topic }).done
      expect(emitted).toMatchObject({ emitted: 0, failed: 3, codes: { TOKEN_FAILED: 3 } })
      expect(emitted.output).not.toMatch(/em-secret/)
      const receiver = spawnPeer('receive', service({ queue: { name: queue } }), { n: 5, topic, readyAtStart: true, idleMs: 5000 })
      await receiver.ready
      await new Promise(r => setTimeout(r, 1500))
      expect(subscribed(topic, queue)).toBeFalsy()
      fake.tokenMode = 'ok'
      await until(() => subscribed(topic, queue), 30000, 'subscription after the token endpoint is back')
      await spawnPeer('emit', service({ queue: { name: queue } }), { n: 5, topic }).done
      const got = await receiver.done
      expect(got.ids).toEqual(range(0, 5))
      expect(got.output).toMatch(/TOKEN_FAILED/)
      expect(got.output).not.toMatch(/em-secret/)
    } finally {
      fake.tokenMode = 'ok'
    }
  }, 90000)
})
