'use strict'
// Opt-in batched inbound processing (`srv.onBatch`) and bulk emit (`srv.emitMany`), issue #16:
// their failure semantics against the real brokers (Redis pub/sub and streams, Mosquitto,
// RabbitMQ), the file box and the local kind, in one CAP app (cds.test). Committed side effects
// are counted with `cds.context.on('succeeded')`: they happen once the batch's transaction commits.
const os = require('node:os')
const fs = require('node:fs')
const path = require('node:path')
const RUN = `b${process.pid}x${Date.now().toString(36)}`
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cds-native-batch-'))
const common = { maxAttempts: 3, retryDelay: 20, maxBatch: 100 }
const KINDS = {
  local: { kind: 'native-local-messaging' },
  'redis-pubsub': { kind: 'native-redis-messaging', credentials: { uri: 'redis://127.0.0.1:6379' }, publishPrefix: `${RUN}/`, subscribePrefix: `${RUN}/` },
  'redis-streams': {
    kind: 'native-redis-messaging',
    mode: 'streams',
    credentials: { uri: 'redis://127.0.0.1:6379' },
    streamPrefix: `${RUN}:`,
    queue: { name: `q-${RUN}` },
    block: 200
  },
  mqtt: { kind: 'native-mqtt-messaging', url: 'mqtt://127.0.0.1:1883', queue: `jest-${RUN}`, publishPrefix: `t${RUN}/`, subscribePrefix: `t${RUN}/` },
  amqp: { kind: 'native-amqp-messaging', url: 'amqp://guest:guest@127.0.0.1:5672', queue: { name: `${RUN}-batch` }, publishPrefix: `${RUN}.`, subscribePrefix: `${RUN}.` },
  file: { kind: 'native-file-based-messaging', file: path.join(dir, 'box') }
}
const requires = {}
for (const [name, o] of Object.entries(KINDS)) requires[`batch-${name}`] = { ...common, ...o }
requires['batch-outboxed'] = { ...common, kind: 'native-local-messaging', outboxed: true }
requires['batch-timeout'] = { ...common, kind: 'native-redis-messaging', mode: 'streams', credentials: { uri: 'redis://127.0.0.1:6379' }, streamPrefix: `${RUN}:t:`, queue: { name: `qt-${RUN}` }, block: 200, handlerTimeout: 300 }
process.env.CDS_CONFIG = JSON.stringify({ requires })
const cds = require('@sap/cds')
const { createClient } = require('redis')
const { assertBroker, until } = require('./helpers')
const { ensureRabbit } = require('./amqp-helpers')

const ids = msgs => msgs.map(m => m.data.id)
const range = (n, from = 0) => Array.from({ length: n }, (_, i) => i + from)
const sleep = ms => new Promise(r => setTimeout(r, ms))

/** Counts per id: calls of the handler and committed side effects (after its transaction committed). */
function recorder() {
  const r = { calls: [], committed: new Map(), seen: new Map() }
  r.commit = msgs => {
    const batch = ids(msgs)
    r.calls.push(batch)
    for (const id of batch) r.seen.set(id, (r.seen.get(id) ?? 0) + 1)
    cds.context.on('succeeded', () => {
      for (const id of batch) r.committed.set(id, (r.committed.get(id) ?? 0) + 1)
    })
  }
  r.committedOnce = list => list.every(id => r.committed.get(id) === 1)
  return r
}

describe('batched inbound (onBatch) and bulk emit (emitMany)', () => {
  cds.test(path.join(__dirname, 'apps', 'reviews'))
  const srvs = {}
  beforeAll(async () => {
    await assertBroker('Redis', 6379, 'redis-server --port 6379 --daemonize yes')
    await assertBroker('Mosquitto', 1883, 'mosquitto -d')
    await ensureRabbit() // RabbitMQ with its AMQP 1.0 plugin (enabled if it is not)
    for (const name of Object.keys(KINDS)) {
      srvs[name] = await cds.connect.to(`batch-${name}`)
      // (connected after cds.once('listening'))
      await srvs[name].startListening()
    }
  }, 150000)
  afterAll(async () => {
    const raw = createClient({ url: 'redis://127.0.0.1:6379' })
    await raw.connect()
    const keys = await raw.keys(`${RUN}:*`)
    if (keys.length) await raw.del(keys)
    await raw.quit()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  test('handlerTimeout covers the batch call: its messages count as failed and are redelivered alone', async () => {
    const srv = await cds.connect.to('batch-timeout')
    await srv.startListening()
    const r = recorder()
    const hung = []
    srv.onBatch('batch.slow', msgs => {
      if (msgs.length > 1) {
        hung.push(msgs.length)
        return new Promise(() => {})
      }
      r.commit(msgs)
    })
    await sleep(300)
    const before = srv.stats()
    const list = range(20)
    await srv.emitMany(list.map(id => ({ event: 'batch.slow', data: { id } })))
    await until(() => r.committedOnce(list), 15000, 'all committed after their redelivery')
    await sleep(300)
    expect(hung.length).toBeGreaterThan(0)
    const redelivered = srv.stats().redelivered - before.redelivered
    // exactly the messages of the hung batches were redelivered, each once
    expect(redelivered).toBe(hung.reduce((a, b) => a + b, 0))
    expect(list.filter(id => r.committed.get(id) !== 1)).toEqual([])
    expect(srv.stats().deadLettered - before.deadLettered).toBe(0)
    await srv.disconnect()
  })

  // Defect (found here): a failure reported early (`engine.settle`, while other messages of its delivery
  // batch still ran) scheduled its redelivery with tokio::spawn on the JavaScript thread, outside the
  // runtime: the process aborted ("there is no reactor running"). main's mqtt.test.js hit it too.
  test.each(['redis-pubsub', 'local'])('%s: a failure settled before the rest of its batch is redelivered (no abort)', async name => {
    const srv = srvs[name]
    const t = `batch.early.${name}`
    const seen = []
    srv.on(t, async msg => {
      seen.push(msg.data.id)
      if (msg.data.id === 0 && seen.filter(x => x === 0).length === 1) throw new Error('fails fast, once')
      if (msg.data.id !== 0) await sleep(300)
    })
    await sleep(name === 'local' ? 0 : 300)
    const before = srv.stats()
    await srv.emitMany(range(5).map(id => ({ event: t, data: { id } })))
    await until(() => seen.filter(x => x === 0).length === 2 && seen.length === 6, 10000, 'message 0 redelivered')
    expect(srv.stats().redelivered - before.redelivered).toBe(1)
  })

  test('emitMany on an outboxed service: every message goes through emit into the outbox, then delivered', async () => {
    const srv = await cds.connect.to('batch-outboxed')
    expect(cds.unqueued(srv)).not.toBe(srv)
    const r = recorder()
    cds.unqueued(srv).onBatch('batch.outboxed', msgs => r.commit(msgs))
    const unqueued = cds.unqueued(srv)
    const send = jest.spyOn(unqueued, '_send')
    const results = await srv.emitMany([
      { event: 'batch.outboxed', data: { id: 1 } },
      { event: 'batch.outboxed', data: { id: 2 } }
    ])
    expect(results.map(x => x.status)).toEqual(['fulfilled', 'fulfilled'])
    await until(() => r.committedOnce([1, 2]), 10000, 'both delivered by the outbox')
    // (the outbox called the service's handle later, message by message)
    expect(send).toHaveBeenCalledTimes(2)
    send.mockRestore()
  })

  describe.each(Object.keys(KINDS))('%s', name => {
    let srv
    beforeAll(() => {
      srv = srvs[name]
    })
    const delta = before => {
      const now = srv.stats()
      return { acked: now.acked - before.acked, redelivered: now.redelivered - before.redelivered, deadLettered: now.deadLettered - before.deadLettered }
    }
    /** Registers `handler` for a fresh topic and lets the subscription reach the broker. */
    const topic = async (suffix, handler) => {
      const t = `batch.${suffix}`
      srv.onBatch(t, handler)
      await sleep(name === 'local' ? 0 : 300)
      return t
    }
    const emitAll = (t, list, extra = () => ({})) => srv.emitMany(list.map(id => ({ event: t, data: { id, ...extra(id) } })))

    test('a batch that succeeds: one transaction per handler call, every message acknowledged once', async () => {
      const r = recorder()
      const txs = new Set()
      const t = await topic('ok', msgs => {
        txs.add(cds.context.tx)
        for (const m of msgs) expect(m).toMatchObject({ event: `batch.ok`, inbound: true })
        r.commit(msgs)
      })
      const before = srv.stats()
      const list = range(200)
      const results = await emitAll(t, list)
      expect(results).toEqual(list.map(() => ({ status: 'fulfilled', value: undefined })))
      await until(() => r.committedOnce(list), 10000, `all 200 committed (${name})`)
      await sleep(200)
      expect([...r.seen.values()].every(c => c === 1)).toBe(true)
      expect(r.calls.flat().sort((a, b) => a - b)).toEqual(list)
      // batched: fewer handler calls than messages, each in its own transaction
      expect(r.calls.length).toBeLessThan(list.length)
      expect(txs.size).toBe(r.calls.length)
      await until(() => delta(before).acked >= list.length, 5000, 'acked')
      expect(delta(before)).toEqual({ acked: list.length, redelivered: 0, deadLettered: 0 })
    })

    test('one message fails: the batch is rolled back and retried one by one; only that one is redelivered, then dead-lettered', async () => {
      const r = recorder()
      const poisonAttempts = []
      const t = await topic('poison', msgs => {
        if (msgs.some(m => m.data.poison)) {
          if (msgs.length === 1) poisonAttempts.push(msgs[0].data.id)
          // side effects of the batch registered before the throw are rolled back with it
          r.commit(msgs.filter(m => !m.data.poison))
          throw new Error('poison in the batch')
        }
        r.commit(msgs)
      })
      const before = srv.stats()
      const list = range(30)
      const results = await emitAll(t, list, id => (id === 7 ? { poison: true } : {}))
      // (a local emit resolves once its receivers finished: the poison one rejects)
      expect(results.filter(x => x.status === 'rejected').length).toBe(name === 'local' ? 1 : 0)
      if (name === 'local') expect(results[7].reason).toMatchObject({ code: 'HANDLER_FAILED' })
      const good = list.filter(id => id !== 7)
      await until(() => delta(before).deadLettered === 1, 15000, `the poison message dead-lettered (${name})`)
      await until(() => r.committedOnce(good), 5000, 'the others committed')
      await sleep(300)
      // every other message committed exactly once; the poison message never
      expect(good.filter(id => r.committed.get(id) !== 1)).toEqual([])
      expect(r.committed.has(7)).toBe(false)
      // the poison message alone: maxAttempts times (its first attempt after its batch failed, then redeliveries)
      expect(poisonAttempts).toEqual([7, 7, 7])
      const d = delta(before)
      expect(d.redelivered).toBe(2)
      expect(d.deadLettered).toBe(1)
      expect(d.acked).toBe(good.length)
      if (name === 'local') expect(srv.deadLetters().some(l => l.payload.includes('"poison":true'))).toBe(true)
      if (name === 'redis-streams') {
        // in the dead-letter stream on Redis
        const raw = createClient({ url: 'redis://127.0.0.1:6379' })
        await raw.connect()
        const entries = await raw.xRange(srv._engine.guarantee().deadLetter, '-', '+')
        await raw.quit()
        expect(entries.filter(e => JSON.stringify(e.message).includes('poison')).length).toBe(1)
      }
    })

    test('a handler that throws for every batch: each message is retried alone and processed once, without redelivery', async () => {
      const r = recorder()
      const t = await topic('whole', msgs => {
        if (msgs.length > 1) throw new Error('cannot take a batch')
        r.commit(msgs)
      })
      const before = srv.stats()
      const list = range(25)
      await emitAll(t, list)
      await until(() => r.committedOnce(list), 10000, `all committed one by one (${name})`)
      await sleep(300)
      expect(list.filter(id => r.committed.get(id) !== 1)).toEqual([])
      expect(r.calls.every(c => c.length === 1)).toBe(true)
      expect(r.calls).toHaveLength(list.length)
      expect(delta(before)).toEqual({ acked: list.length, redelivered: 0, deadLettered: 0 })
    })

    test('bulk emit with one unserialisable message: per-message results, the others delivered', async () => {
      const r = recorder()
      const t = await topic('bulk', msgs => r.commit(msgs))
      const results = await srv.emitMany([
        { event: t, data: { id: 1 } },
        { event: t, data: { id: 2, big: 10n } },
        { event: t, data: { id: 3 } },
        { data: { id: 4 } }
      ])
      expect(results.map(x => x.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected'])
      expect(results[1].reason).toMatchObject({ code: 'INVALID_DATA_FORMAT' })
      expect(results[1].reason.message).toMatch(/batch\.bulk/)
      expect(results[3].reason).toMatchObject({ code: 'INVALID_CONFIG' })
      await until(() => r.committedOnce([1, 3]), 10000, `1 and 3 delivered (${name})`)
      await sleep(200)
      expect([...r.committed.keys()].sort()).toEqual([1, 3])
      await expect(srv.emitMany('nope')).rejects.toMatchObject({ code: 'INVALID_CONFIG' })
    })

    test('plain on() handlers of the same event are not bypassed: then messages go one by one', async () => {
      const r = recorder()
      const plain = []
      const t = await topic('mixed', msgs => r.commit(msgs))
      srv.on(t, msg => {
        plain.push(msg.data.id)
      })
      await sleep(name === 'local' ? 0 : 300)
      const list = range(10)
      await emitAll(t, list)
      await until(() => r.committedOnce(list) && plain.length === list.length, 10000, 'both handlers saw every message')
      expect(r.calls.every(c => c.length === 1)).toBe(true)
      expect(plain.sort((a, b) => a - b)).toEqual(list)
    })
  })
})
