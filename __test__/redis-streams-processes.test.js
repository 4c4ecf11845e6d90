'use strict'
// Streams mode across processes: a consumer killed with SIGKILL in the middle of 10,000 messages,
// two consumers sharing a queue, and a private Redis restarted mid-stream.
const path = require('node:path')
const { assertBroker } = require('./helpers')
const { killPeers, startPeer, runPeer, records, privateRedis, rawClient, tally, tmpDir, until } = require('./redis-helpers')

const run = `s${process.pid}-${Date.now().toString(36)}`
const URI = 'redis://127.0.0.1:6379'
const config = (name, extra = {}, uri = URI) => ({
  kind: 'native-redis-messaging',
  mode: 'streams',
  credentials: { uri },
  streamPrefix: `${run}:${name}:`,
  queue: { name: `q-${run}-${name}` },
  claimAfter: 1000,
  block: 200,
  ...extra
})
const ids = (...files) => files.flatMap(f => records(f).map(r => r.i))
/** Resolves once the consumer group of `cfg` exists on the stream of `topic`. */
const groupExists = (raw, cfg, topic) =>
  until(
    async () => {
      try {
        return (await raw.xInfoGroups(`${cfg.streamPrefix}${topic}`)).some(g => g.name === cfg.queue.name)
      } catch {
        return false
      }
    },
    10000,
    'the consumer group'
  )

describe('native-redis-messaging streams across processes', () => {
  let raw
  beforeAll(async () => {
    await assertBroker('Redis', 6379, 'redis-server --port 6379 --daemonize yes')
    raw = await rawClient(URI)
  })
  afterEach(killPeers)
  afterAll(async () => {
    if (!raw) return
    const keys = await raw.keys(`${run}:*`)
    if (keys.length) await raw.del(keys)
    await raw.quit()
  })

  test('10,000 messages, consumer killed with SIGKILL in the middle and restarted: every message processed', async () => {
    const dir = tmpDir('redis-kill')
    const topic = 'reviewed'
    const cfg = config('kill')
    const [f1, f2] = [path.join(dir, 'first.jsonl'), path.join(dir, 'second.jsonl')]
    const first = startPeer('receive', cfg, { topic, record: f1, forever: true, delayMs: 1 })
    await first.ready
    await groupExists(raw, cfg, topic)
    const emitter = runPeer('emit', cfg, { topic, n: 10000, chunk: 500 })
    await until(() => records(f1).length >= 3000, 30000, '3,000 messages processed by the first consumer')
    first.kill('SIGKILL')
    const killedAt = records(f1).length
    const second = startPeer('receive', cfg, { topic, record: f2, forever: true })
    await second.ready
    expect((await emitter).emitted).toBe(10000)
    await until(() => tally(ids(f1, f2), 10000).missing.length === 0, 40000, 'all 10,000 messages')
    const t = tally(ids(f1, f2), 10000)
    console.log(
      `streams SIGKILL test: first consumer processed ${killedAt} before SIGKILL, restarted consumer ${records(f2).length}; ` +
        `missing ${t.missing.length}, duplicates ${t.duplicates}`
    )
    expect(t.missing).toEqual([])
    // Only what the killed consumer had processed but not yet acknowledged comes again: at most
    // maxInFlight (100), since a handled entry keeps its place until its XACK is confirmed.
    expect(t.duplicates).toBeLessThanOrEqual(100)
    await until(async () => (await raw.xPending(`${cfg.streamPrefix}${topic}`, cfg.queue.name)).pending === 0, 10000, 'nothing pending')
    expect(second.output()).toMatch(/took over \d+ pending message\(s\)/)
  })

  test('Redis stalls while a consumer works, then the consumer is killed: only what was in its handlers comes again', async () => {
    // A handler that finished frees its place under maxInFlight only once its XACK is confirmed, so
    // a stalled Redis stops consumption at maxInFlight processed-but-unacknowledged entries instead
    // of letting the process work through everything it had read (all of that would come again).
    const redis = await privateRedis('streams-stall')
    const priv = await rawClient(redis.url)
    try {
      const dir = tmpDir('redis-streams-stall')
      const topic = 'reviewed'
      const cfg = config('stall', { maxInFlight: 5, readCount: 50 }, redis.url)
      const key = `${cfg.streamPrefix}${topic}`
      const file = path.join(dir, 'got.jsonl')
      const consumer = startPeer('receive', cfg, { topic, record: file, forever: true, delayMs: 2 })
      await consumer.ready
      await groupExists(priv, cfg, topic)
      await runPeer('emit', cfg, { topic, n: 3000, chunk: 500 })
      await until(() => records(file).length >= 100, 20000, '100 messages processed')
      redis.pause()
      await new Promise(r => setTimeout(r, 1500)) // the handlers go on; no XACK can land
      consumer.kill('SIGKILL')
      await consumer.done.catch(() => {})
      redis.resume()
      const processed = new Set(ids(file))
      const byId = new Map((await priv.xRange(key, '-', '+')).map(e => [e.id, JSON.parse(e.message.payload).data.i]))
      const pending = await priv.xPendingRange(key, cfg.queue.name, '-', '+', 10000)
      const again = pending.filter(p => processed.has(byId.get(p.id))).length
      console.log(`streams stall test: ${processed.size} processed, ${pending.length} pending, ${again} of them processed already`)
      expect(processed.size).toBeLessThan(3000)
      expect(again).toBeLessThanOrEqual(5)
    } finally {
      await priv.quit().catch(() => {})
      await redis.stop()
    }
  })

  test('two consumer processes of one queue share the load without duplicates', async () => {
    const dir = tmpDir('redis-share')
    const topic = 'reviewed'
    const cfg = config('share', { maxInFlight: 10, readCount: 10 })
    const [f1, f2] = [path.join(dir, 'a.jsonl'), path.join(dir, 'b.jsonl')]
    const a = startPeer('receive', cfg, { topic, record: f1, forever: true, delayMs: 2 })
    const b = startPeer('receive', cfg, { topic, record: f2, forever: true, delayMs: 2 })
    await Promise.all([a.ready, b.ready])
    await groupExists(raw, cfg, topic)
    await runPeer('emit', cfg, { topic, n: 2000, chunk: 200 })
    await until(() => tally(ids(f1, f2), 2000).missing.length === 0, 30000, 'all 2,000 messages')
    const t = tally(ids(f1, f2), 2000)
    const [na, nb] = [records(f1).length, records(f2).length]
    console.log(`streams sharing test: consumer A ${na}, consumer B ${nb}, duplicates ${t.duplicates}`)
    expect(t.duplicates).toBe(0)
    expect(Math.min(na, nb)).toBeGreaterThan(200)
  })

  test('a message whose handler kills the process each time is dead-lettered after maxAttempts when taken over', async () => {
    const dir = tmpDir('redis-crash-loop')
    const topic = 'reviewed'
    const cfg = config('crash', { maxAttempts: 2, claimAfter: 300 })
    const dlq = `${cfg.streamPrefix}${cfg.queue.name}:dead-letter`
    const file = path.join(dir, 'got.jsonl')
    const consumer = () => startPeer('receive', cfg, { topic, record: file, forever: true, crashOn: 0 })
    const first = consumer()
    await first.ready
    await groupExists(raw, cfg, topic)
    await runPeer('emit', cfg, { topic, n: 3 }) // { i: 0 } is the poison
    await first.done.catch(() => {}) // killed by its handler (delivery 1)
    const second = consumer()
    await second.done.catch(() => {}) // takes { i: 0 } over and is killed again (delivery 2)
    const third = consumer()
    await third.ready
    const deadIds = async () => (await raw.xRange(dlq, '-', '+')).map(e => JSON.parse(e.message.payload).data.i)
    await until(async () => (await deadIds()).includes(0), 15000, 'the dead letter')
    const dead = (await raw.xRange(dlq, '-', '+')).find(e => JSON.parse(e.message.payload).data.i === 0)
    expect(dead.message.error).toMatch(/delivered 2 time\(s\) without being acknowledged/)
    // Nothing is lost: messages read together with the poison by the crashing processes count the same
    // deliveries, so each of them is either processed or dead-lettered beside it.
    await until(async () => tally([...ids(file), ...(await deadIds())], 3).missing.length === 0, 10000, 'the other messages')
    expect(third.output()).toMatch(/message on topic 'reviewed' delivered 2 time\(s\) without being acknowledged .* moved to the dead-letter place/)
  })

  test('private Redis restarted mid-stream: nothing is lost', async () => {
    const redis = await privateRedis('streams-restart')
    try {
      const dir = tmpDir('redis-streams-restart')
      const topic = 'reviewed'
      const cfg = config('restart', { maxInFlight: 4, reconnectDelay: 50, maxReconnectDelay: 500 }, redis.url)
      const file = path.join(dir, 'got.jsonl')
      const consumer = startPeer('receive', cfg, { topic, record: file, forever: true, delayMs: 2 })
      await consumer.ready
      const priv = await rawClient(redis.url)
      await groupExists(priv, cfg, topic)
      await priv.quit()
      await runPeer('emit', cfg, { topic, n: 3000, chunk: 500 })
      await until(() => records(file).length >= 300, 20000, '300 messages processed')
      const before = records(file).length
      await redis.restart()
      await runPeer('emit', cfg, { topic, n: 1000, from: 3000, chunk: 500 })
      await until(() => tally(ids(file), 4000).missing.length === 0, 40000, 'all 4,000 messages')
      const t = tally(ids(file), 4000)
      console.log(`streams Redis-restart test: ${before} processed before the restart; missing ${t.missing.length}, duplicates ${t.duplicates}`)
      expect(t.missing).toEqual([])
      expect(consumer.output()).toMatch(/reconnected to Redis at 127\.0\.0\.1:\d+/)
    } finally {
      await redis.stop()
    }
  })
})
