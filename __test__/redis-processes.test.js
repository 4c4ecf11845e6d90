'use strict'
// Pub/sub mode across processes: interop with @sap/cds redis-messaging in both directions, and a
// private Redis restarted while a consumer is subscribed.
const fs = require('node:fs')
const path = require('node:path')
const { assertBroker } = require('./helpers')
const { killPeers, startPeer, runPeer, records, privateRedis, rawClient, tmpDir, until } = require('./redis-helpers')

const run = `p${process.pid}-${Date.now().toString(36)}`
const URI = 'redis://127.0.0.1:6379'
// A binding's URI has a user name; @sap/cds drops it (and needs it: without one its rewrite drops the host).
const bound = url => url.replace('redis://', 'redis://default:@')
const ours = (uri = URI) => ({ kind: 'native-redis-messaging', credentials: { uri: bound(uri) } })
const theirs = (uri = URI) => ({ kind: 'redis-messaging', credentials: { uri: bound(uri) }, outboxed: false })
const range = (from, n) => Array.from({ length: n }, (_, k) => from + k)
const numsub = async (raw, ch) => (await raw.pubSubNumSub(ch))[ch]

describe('native-redis-messaging pub/sub across processes', () => {
  let raw
  beforeAll(async () => {
    await assertBroker('Redis', 6379, 'redis-server --port 6379 --daemonize yes')
    raw = await rawClient(URI)
  })
  afterEach(killPeers)
  afterAll(() => raw?.quit())

  test('interop both ways with @sap/cds redis-messaging: every message arrives, with the same msg shape', async () => {
    const dir = tmpDir('redis-interop')
    const topic = `${run}.interop`
    const oursFile = path.join(dir, 'ours.jsonl')
    const theirsFile = path.join(dir, 'theirs.jsonl')
    const ourReceiver = startPeer('receive', ours(), { topic, n: 40, record: oursFile })
    const theirReceiver = startPeer('receive', theirs(), { topic, n: 40, record: theirsFile })
    await Promise.all([ourReceiver.ready, theirReceiver.ready])
    await until(async () => (await numsub(raw, topic)) >= 2, 10000, 'both subscriptions')

    const a = await runPeer('emit', theirs(), { topic, n: 20, from: 0 }) // their emitter
    const b = await runPeer('emit', ours(), { topic, n: 20, from: 20 }) // our emitter
    expect(a.emitted + b.emitted).toBe(40)
    const [o, t] = await Promise.all([ourReceiver.done, theirReceiver.done])
    expect(o.ids).toEqual(range(0, 40))
    expect(t.ids).toEqual(range(0, 40))
    expect(o.dup + t.dup).toBe(0)

    const byId = file => new Map(records(file).map(r => [r.i, r]))
    const mine = byId(oursFile)
    const theirsById = byId(theirsFile)
    for (const i of range(0, 40)) {
      const { event, data, headers, inbound } = theirsById.get(i)
      expect(mine.get(i)).toEqual({ i, event, data, headers, inbound })
    }
    expect(mine.get(0)).toMatchObject({ event: topic, data: { i: 0 }, inbound: true })
    expect(mine.get(0).headers).toMatchObject({ 'x-sender': expect.any(String) })
    expect(mine.get(25).headers).toMatchObject({ 'x-sender': expect.any(String) })
  })

  test('private Redis restarted: the subscriber reconnects, subscribes again and keeps receiving', async () => {
    const redis = await privateRedis('pubsub-restart')
    const topic = `${run}.restart`
    const file = path.join(tmpDir('redis-restart'), 'got.jsonl')
    const cfg = { ...ours(redis.url), reconnectDelay: 50, maxReconnectDelay: 500 }
    const receiver = startPeer('receive', cfg, { topic, n: 100, record: file })
    try {
      await receiver.ready
      let priv = await rawClient(redis.url)
      await until(async () => (await numsub(priv, topic)) >= 1, 10000, 'the subscription')
      await runPeer('emit', cfg, { topic, n: 50, from: 0 })
      await until(() => records(file).length >= 50, 10000, 'the first 50')

      await priv.quit()
      await redis.restart()
      priv = await rawClient(redis.url)
      await until(async () => (await numsub(priv, topic)) >= 1, 15000, 'the subscription after the restart')
      await priv.quit()
      await runPeer('emit', cfg, { topic, n: 50, from: 50 })
      const got = await receiver.done
      expect(got.ids).toEqual(range(0, 100))
      expect(got.output).toMatch(/subscription connection to Redis at 127\.0\.0\.1:\d+ lost/)
      expect(got.output).toMatch(/reconnected to Redis at 127\.0\.0\.1:\d+; subscribed again to 1 channel/)
    } finally {
      receiver.kill()
      await redis.stop()
    }
  })

  test('credentials from a redis-cache service binding (VCAP_SERVICES), with a password', async () => {
    const password = 'vcap-pw-789'
    const redis = await privateRedis('vcap', { password })
    try {
      const env = {
        VCAP_SERVICES: JSON.stringify({
          'redis-cache': [{ label: 'redis-cache', name: 'my-cache', tags: ['cache'], credentials: { uri: `redis://some-user:${password}@127.0.0.1:${redis.port}` } }]
        })
      }
      const topic = `${run}.vcap`
      const cfg = { kind: 'native-redis-messaging' } // no credentials: they come from the binding
      const receiver = startPeer('receive', cfg, { topic, n: 5 }, { env })
      await receiver.ready
      const priv = await rawClient(redis.url)
      await until(async () => (await numsub(priv, topic)) >= 1, 10000, 'the subscription')
      await priv.quit()
      await runPeer('emit', cfg, { topic, n: 5 }, { env })
      const got = await receiver.done
      expect(got.ids).toEqual(range(0, 5))
      expect(got.output).not.toContain(password)
    } finally {
      await redis.stop()
    }
  })

  test('a subscriber that crashes on nothing: Redis down at startup, the host keeps running and connects later', async () => {
    const redis = await privateRedis('pubsub-late')
    await redis.stop()
    const topic = `${run}.late`
    const file = path.join(tmpDir('redis-late'), 'got.jsonl')
    const cfg = { ...ours(redis.url), reconnectDelay: 50, maxReconnectDelay: 300 }
    const receiver = startPeer('receive', cfg, { topic, n: 10, record: file })
    try {
      await receiver.ready
      await new Promise(r => setTimeout(r, 500))
      expect(receiver.child.exitCode).toBe(null)
      await redis.start()
      const priv = await rawClient(redis.url)
      await until(async () => (await numsub(priv, topic)) >= 1, 10000, 'the subscription')
      await priv.quit()
      await runPeer('emit', cfg, { topic, n: 10 })
      const got = await receiver.done
      expect(got.ids).toEqual(range(0, 10))
      expect(got.output).toMatch(/cannot subscribe on Redis at 127\.0\.0\.1:\d+/)
      expect(fs.existsSync(file)).toBe(true)
    } finally {
      receiver.kill()
      await redis.stop()
    }
  })

  test('a script that emits and ends without disconnecting: its emits complete, arrive, and the process exits by itself', async () => {
    const topic = `${run}.script`
    const sub = await rawClient(URI)
    const got = []
    await sub.subscribe(topic, m => got.push(JSON.parse(m).data.i))
    try {
      const t0 = Date.now()
      const r = await runPeer('script', ours(), { topic, n: 5 }, { timeout: 15000 })
      expect(r.emitted).toBe(5)
      expect(Date.now() - t0).toBeLessThan(15000)
      await until(async () => got.length >= 5, 5000, 'the five messages')
      expect(got.sort()).toEqual(range(0, 5))
    } finally {
      await sub.quit()
    }
  })
})
