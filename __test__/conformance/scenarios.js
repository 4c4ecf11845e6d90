'use strict'
// One scenario table for every kind (Watermill's pubsub/tests is the model). Each scenario names
// the capabilities it needs (see kinds.js); `conformance(name)` runs every scenario the kind's
// capabilities allow and lists the others as skipped with the reason in their title.
const path = require('node:path')
const cds = require('@sap/cds')
const { until, tmpDir } = require('../helpers')
const { startPeer, runPeer, killPeers, records, tally } = require('../redis-helpers')
const { kinds, RUN } = require('./kinds')

const PEER = path.join(__dirname, '..', 'apps', 'peer')
const sleep = ms => new Promise(r => setTimeout(r, ms))
let seq = 0
/** A topic and queue name of its own for each scenario of this run. */
const unique = name => `${name}${seq++}`
const topicOf = name => `${RUN}.${name}`

// Log lines: cds's default logger writes through console; the engine's lines reach it from its thread.
const logged = []
for (const level of ['error', 'warn', 'info', 'log']) {
  const original = console[level]
  console[level] = (...a) => {
    logged.push(a.map(x => (x instanceof Error ? x.message : String(x))).join(' '))
    if (!process.env.CONFORMANCE_QUIET) original.apply(console, a)
  }
}

/** Raced against `ms`: a hang fails the scenario instead of the whole file. */
const within = (ms, what, p) => Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`timed out after ${ms} ms: ${what}`)))])

/** Odd rejection values (#14 items 2 and 9): each must count as a failure like an Error. */
const ODD = [
  ['throw undefined', () => { throw undefined }],
  ['throw null', () => { throw null }],
  ['Promise.reject()', () => Promise.reject()],
  ['throw Object.create(null)', () => { throw Object.create(null) }],
  ['an error whose message getter throws', () => { throw Object.defineProperty(new Error(), 'message', { get() { throw new Error('no message') } }) }]
]

/**
 * The scenario table: [title, required capabilities, body(ctx)]. ctx: { env, caps, open, topic, emit }.
 * A capability is required when its value is truthy (`deadLetter` is the kind of place).
 */
const scenarios = [
  ['emit(event, data, headers) and emit({event, data, headers}): the handler gets data and headers as @sap/cds delivers them', [], async ({ open, topic }) => {
    const svc = await open('shape')
    const t = topic('shape')
    const seen = []
    svc.on(t, msg => seen.push({ event: msg.event, data: msg.data, headers: msg.headers, inbound: msg.inbound, user: cds.context?.user }))
    await svc.startListening()
    await svc.emit(t, { ID: 1, text: 'ä €', list: [1, null, { x: true }] }, { 'x-custom': 'h', n: 2 })
    await svc.emit({ event: t, data: { ID: 2 }, headers: { 'x-other': 'o' } })
    await until(() => seen.length === 2, 15000, 'two deliveries')
    seen.sort((a, b) => a.data.ID - b.data.ID)
    expect(seen[0]).toMatchObject({ event: t, data: { ID: 1, text: 'ä €', list: [1, null, { x: true }] }, headers: { 'x-custom': 'h', n: 2 }, inbound: true })
    expect(seen[1]).toMatchObject({ event: t, data: { ID: 2 }, headers: { 'x-other': 'o' }, inbound: true })
    expect(seen[0].user).toBe(cds.User.privileged)
  }],

  ['late subscription: on() after listening receives what is emitted next', [], async ({ open, topic }) => {
    const svc = await open('late')
    const early = topic('early')
    svc.on(early, () => {})
    await svc.startListening()
    const t = topic('late')
    const seen = []
    svc.on(t, msg => seen.push(msg.data.n))
    await svc.emit(t, { n: 1 })
    await until(() => seen.length === 1, 15000, 'the late subscription')
    expect(seen).toEqual([1])
  }],

  ["on('*') with forceListening receives every topic, with msg.event = the topic", ['wildcard'], async ({ open, topic }) => {
    const svc = await open('star', { forceListening: true })
    const seen = []
    const mine = new Set([topic('star.a'), topic('star.b.c')])
    svc.on('*', msg => mine.has(msg.event) && seen.push({ event: msg.event, data: msg.data }))
    await svc.startListening()
    await sleep(300) // a wildcard subscription has no topic an emit could wait for
    for (const t of mine) await svc.emit(t, { t })
    await until(() => seen.length === 2, 15000, "both topics through '*'")
    expect(seen.map(s => s.event).sort()).toEqual([...mine].sort())
    expect(seen.every(s => s.data.t === s.event)).toBe(true)
  }],

  ['ordering: one consumer with maxInFlight 1 gets 50 messages in emit order', ['ordering'], async ({ open, topic }) => {
    const svc = await open('order', { maxInFlight: 1 })
    const t = topic('order')
    const seen = []
    svc.on(t, msg => seen.push(msg.data.i))
    await svc.startListening()
    for (let i = 0; i < 50; i++) await svc.emit(t, { i })
    await until(() => seen.length >= 50, 15000, '50 deliveries')
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i))
  }],

  ['handler fails once: the message is redelivered and processed once', [], async ({ open, topic }) => {
    const svc = await open('flaky')
    const t = topic('flaky')
    let calls = 0
    const processed = []
    svc.on(t, msg => {
      if (++calls === 1) throw new Error('temporary failure')
      processed.push(msg.data.n)
    })
    await svc.startListening()
    await svc.emit(t, { n: 7 })
    await until(() => processed.length === 1, 15000, 'the redelivery')
    await sleep(300)
    expect({ calls, processed }).toEqual({ calls: 2, processed: [7] })
  }],

  ['handler always fails: dead-lettered after maxAttempts (exactly that many calls), with an error log line', ['deadLetter'], async ({ open, topic, env, caps }) => {
    const cfg = {}
    const svc = await open('poison', { maxAttempts: 2 }, cfg)
    const dead = await env.deadLetters(svc, cfg.value)
    const t = topic('poison')
    let calls = 0
    svc.on(t, () => {
      calls++
      throw new Error('cannot process')
    })
    await svc.startListening()
    const emitted = svc.emit(t, { id: 42 })
    if (caps.syncEmit) expect((await emitted.catch(e => e)).code).toBe('HANDLER_FAILED')
    else await emitted
    await until(async () => (await dead.list()).some(d => d.data?.id === 42), 20000, `the dead letter in the ${caps.deadLetter}`)
    await until(() => logged.some(l => l.includes(`'${t}'`) && /failed 2 time\(s\) and was moved to the dead-letter place/.test(l)), 5000, 'the error log line')
    await sleep(500)
    expect(calls).toBe(2)
    await dead.close()
  }],

  ...ODD.map(([what, fail]) => [
    `handler fails once with ${what}: counted as a failure, redelivered and processed`,
    [],
    async ({ open, topic }) => {
      const svc = await open('odd')
      const t = topic('odd')
      let calls = 0
      const processed = []
      svc.on(t, msg => {
        if (++calls === 1) return fail()
        processed.push(msg.data.n)
      })
      await svc.startListening()
      await within(20000, 'the emit', svc.emit(t, { n: 1 }))
      await until(() => processed.length === 1, 8000, `a redelivery after ${what}`).catch(e => {
        throw new Error(`${e.message} (handler calls: ${calls})`)
      })
      await sleep(300)
      expect({ calls, processed }).toEqual({ calls: 2, processed: [1] })
    }
  ]),

  ['handler always fails with throw Object.create(null): dead-lettered after maxAttempts, not redelivered forever', ['deadLetter'], async ({ open, topic, env, caps }) => {
    const cfg = {}
    const svc = await open('oddpoison', { maxAttempts: 2 }, cfg)
    const dead = await env.deadLetters(svc, cfg.value)
    const t = topic('oddpoison')
    let calls = 0
    svc.on(t, () => {
      calls++
      throw Object.create(null)
    })
    await svc.startListening()
    const emitted = within(10000, 'the emit', svc.emit(t, { id: 43 }))
    if (caps.syncEmit) expect((await emitted.catch(e => e)).code).toBe('HANDLER_FAILED')
    else await emitted
    await until(async () => (await dead.list()).some(d => d.data?.id === 43), 10000, `the dead letter (handler calls so far: ${calls})`).catch(e => {
      throw new Error(`${e.message}; handler calls: ${calls}`)
    })
    await sleep(500)
    expect(calls).toBe(2)
    await dead.close()
  }],

  ['a handler that never settles does not stall the others: 300 messages behind it are processed', [], async ({ open, topic, caps }) => {
    const svc = await open('hang')
    const t = topic('hang')
    let release
    const never = new Promise(r => (release = r))
    const processed = new Set()
    svc.on(t, async msg => {
      if (msg.data.i === 0) return never
      processed.add(msg.data.i)
    })
    // Where messages wait for a consumer that never listened, they are a backlog when it starts.
    if (!caps.backlogWithoutConsumer) await svc.startListening()
    try {
      const first = svc.emit(t, { i: 0 })
      if (!caps.syncEmit) await first
      else first.catch(() => {})
      await within(15000, '300 emits', Promise.all(Array.from({ length: 300 }, (_, k) => svc.emit(t, { i: k + 1 }))))
      if (caps.backlogWithoutConsumer) await svc.startListening()
      await until(() => processed.size === 300, 15000, '300 messages behind the hanging one').catch(e => {
        throw new Error(`${e.message}: ${processed.size} of 300 processed`)
      })
    } finally {
      release()
    }
  }],

  ['nested emits: 200 concurrent handlers that each await an emit all complete', [], async ({ open, topic }) => {
    const svc = await open('nested')
    const [outer, inner] = [topic('outer'), topic('inner')]
    const got = new Set()
    svc.on(outer, async msg => {
      await svc.emit(inner, { i: msg.data.i })
    })
    svc.on(inner, msg => got.add(msg.data.i))
    await svc.startListening()
    await within(15000, '200 outer emits', Promise.all(Array.from({ length: 200 }, (_, i) => svc.emit(outer, { i }))))
    await until(() => got.size === 200, 15000, '200 inner messages').catch(e => {
      throw new Error(`${e.message}: ${got.size} of 200`)
    })
  }],

  ['oversize data: a 4 MB message is delivered intact', [], async ({ open, topic }) => {
    const svc = await open('big')
    const t = topic('big')
    const text = 'x'.repeat(4 * 1024 * 1024 - 7) + 'ä€end'
    const seen = []
    svc.on(t, msg => seen.push(msg.data.text))
    await svc.startListening()
    await within(30000, 'the emit', svc.emit(t, { text }))
    await until(() => seen.length === 1, 30000, 'the 4 MB message')
    expect(seen[0].length).toBe(text.length)
    expect(seen[0] === text).toBe(true)
  }],

  ['unserialisable data (BigInt, circular) rejects with INVALID_DATA_FORMAT naming the topic; the service keeps working', [], async ({ open, topic }) => {
    const svc = await open('unser')
    const t = topic('unser')
    const seen = []
    svc.on(t, msg => seen.push(msg.data))
    await svc.startListening()
    const circular = { a: 1 }
    circular.self = circular
    for (const data of [{ n: 1n }, circular]) {
      const err = await svc.emit(t, data).then(() => undefined, e => e)
      expect(err).toBeInstanceOf(Error)
      expect({ code: err.code, names: err.message.includes(t) }).toEqual({ code: 'INVALID_DATA_FORMAT', names: true })
    }
    await svc.emit(t, { ok: true })
    await until(() => seen.length === 1, 15000, 'the next message')
    expect(seen).toEqual([{ ok: true }])
  }],

  ['bad options fail with INVALID_CONFIG (in a child process: an absurd value must not take the host down)', [], async ({ env }) => {
    const base = env.config(unique('bad'))
    const variants = [{ maxAttempts: 0 }, { maxAttempts: 'often' }, { retryDelay: -5 }, { maxInFlight: 1.5 }, { maxInFlight: 1e9 }, { maxBatch: 1e12 }, ...env.badOptions]
    // One child tries the variants in turn; when one takes it down, the next child goes on after it.
    const seen = []
    for (let from = 0; from < variants.length; ) {
      const rest = variants.slice(from).map(v => ({ ...base, ...v }))
      const out = await startPeer('config', base, { variants: rest }, { app: PEER, timeout: 60000 }).done.catch(e => e)
      const lines = String(out.output ?? out.message)
        .split('\n')
        .filter(l => l.startsWith('{"variant"'))
        .map(l => ({ ...JSON.parse(l), at: from + JSON.parse(l).variant }))
      seen.push(...lines)
      const last = lines.pop()
      from = last ? last.at + 1 : variants.length
    }
    const results = variants.map((v, k) => {
      const r = seen.filter(l => l.at === k).pop()
      return { option: JSON.stringify(v), code: !r ? 'not tried' : r.start ? 'the process died' : r.ok ? 'accepted' : r.code }
    })
    expect(results).toEqual(variants.map(v => ({ option: JSON.stringify(v), code: 'INVALID_CONFIG' })))
  }],

  // ---- several processes ----

  ['consumer SIGKILLed in the middle of 5,000 messages and restarted: 0 lost (duplicates counted)', ['persistent', 'multiProcess'], async ({ env, kindName }) => {
    const dir = tmpDir(`conformance-kill-${kindName}`)
    const t = topic4(unique('kill'))
    const cfg = env.config(unique('kill'), { maxAttempts: 5 })
    const [f1, f2] = [path.join(dir, 'first.jsonl'), path.join(dir, 'second.jsonl')]
    const first = startPeer('receive', cfg, { topic: t, record: f1, forever: true, delayMs: 1 }, { app: PEER, timeout: 120000 })
    await first.ready
    const emitter = runPeer('emit', cfg, { topic: t, n: 5000, chunk: 500 }, { app: PEER, timeout: 120000 })
    await until(() => records(f1).length >= 1000, 60000, '1,000 messages processed by the first consumer')
    first.kill('SIGKILL')
    await first.done.catch(() => {})
    const atKill = records(f1).length
    const second = startPeer('receive', cfg, { topic: t, record: f2, forever: true }, { app: PEER, timeout: 120000 })
    await second.ready
    const emitted = await emitter
    expect(emitted).toMatchObject({ emitted: 5000, failed: 0 })
    const ids = () => [...records(f1), ...records(f2)].map(r => r.i)
    await until(() => tally(ids(), 5000).missing.length === 0, 90000, 'all 5,000 messages').catch(() => {})
    const r = tally(ids(), 5000)
    process.stdout.write(`conformance ${kindName}: SIGKILL after ${atKill} processed; restarted consumer ${records(f2).length}; lost ${r.missing.length}, duplicates ${r.duplicates}\n`)
    expect(r.missing).toEqual([])
  }],

  ['broker restart while consuming: the consumer reconnects and resumes (0 lost where persistent)', ['brokerRestart', 'multiProcess'], async ({ env, caps, kindName }) => {
    const dir = tmpDir(`conformance-restart-${kindName}`)
    const t = topic4(unique('restart'))
    const name = unique('restart')
    // A slow consumer (4 in flight, 5 ms each), so the restart comes in the middle of its backlog.
    const cfg = env.proxied ? env.proxied(name, { maxInFlight: 4 }) : env.config(name, { maxInFlight: 4 })
    const file = path.join(dir, 'got.jsonl')
    const consumer = startPeer('receive', cfg, { topic: t, record: file, forever: true, delayMs: 5 }, { app: PEER, timeout: 120000 })
    await consumer.ready
    const ids = () => records(file).map(r => r.i)
    if (caps.persistent) {
      expect(await runPeer('emit', cfg, { topic: t, n: 2000, chunk: 250 }, { app: PEER, timeout: 60000 })).toMatchObject({ emitted: 2000 })
      await until(() => records(file).length >= 200, 30000, '200 messages before the restart')
      const before = records(file).length
      await env.broker.restart()
      expect(await runPeer('emit', cfg, { topic: t, n: 1000, from: 2000, chunk: 250 }, { app: PEER, timeout: 90000 })).toMatchObject({ emitted: 1000, failed: 0 })
      await until(() => tally(ids(), 3000).missing.length === 0, 60000, 'all 3,000 messages').catch(() => {})
      const r = tally(ids(), 3000)
      process.stdout.write(`conformance ${kindName}: broker restart after ${before} processed; lost ${r.missing.length}, duplicates ${r.duplicates}\n`)
      expect(r.missing).toEqual([])
    } else {
      // at-most-once: what is published during the outage may be lost; after it, delivery resumes
      await env.broker.restart()
      const emitter = await cds.connect.to(cfg)
      let i = 0
      await until(
        async () => {
          await emitter.emit(t, { i: i++ }).catch(() => {})
          return records(file).length > 0
        },
        30000,
        'a message after the restart'
      ).finally(() => emitter.disconnect())
    }
    expect(consumer.output()).not.toMatch(/peer failed|Unhandled|panicked/)
  }],

  ['two consumer processes of one queue split the messages: 0 lost, 0 duplicates', ['sharedQueue', 'multiProcess'], async ({ env, kindName }) => {
    const dir = tmpDir(`conformance-share-${kindName}`)
    const name = unique('share')
    const t = topic4(name)
    const [fa, fb] = [path.join(dir, 'a.jsonl'), path.join(dir, 'b.jsonl')]
    const a = startPeer('receive', env.sharedConfig(name), { topic: t, record: fa, forever: true, delayMs: 2 }, { app: PEER, timeout: 90000 })
    const b = startPeer('receive', env.sharedConfig(name), { topic: t, record: fb, forever: true, delayMs: 2 }, { app: PEER, timeout: 90000 })
    await Promise.all([a.ready, b.ready])
    expect(await runPeer('emit', env.sharedConfig(name), { topic: t, n: 2000, chunk: 250 }, { app: PEER, timeout: 60000 })).toMatchObject({ emitted: 2000 })
    const ids = () => [...records(fa), ...records(fb)].map(r => r.i)
    await until(() => tally(ids(), 2000).missing.length === 0, 45000, 'all 2,000 messages').catch(() => {})
    await sleep(1000) // a late duplicate would arrive now
    const r = tally(ids(), 2000)
    const [na, nb] = [records(fa).length, records(fb).length]
    process.stdout.write(`conformance ${kindName}: shared queue: A ${na}, B ${nb}; lost ${r.missing.length}, duplicates ${r.duplicates}\n`)
    expect({ lost: r.missing.length, duplicates: r.duplicates }).toEqual({ lost: 0, duplicates: 0 })
    expect(Math.min(na, nb)).toBeGreaterThan(0)
  }],

  ['two apps with default configuration each receive every message', ['fanOutPerApp', 'multiProcess'], async ({ env, kindName }) => {
    const fs = require('node:fs')
    const t = topic4(unique('apps'))
    const apps = ['a', 'b'].map(x => {
      const dir = tmpDir(`conformance-app-${x}`)
      fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `conformance-${x}-${RUN}`, private: true, dependencies: { 'cds-native-messaging': '*' } }))
      return { dir, record: path.join(dir, 'got.jsonl') }
    })
    const cfg = env.defaultConfig()
    const receivers = apps.map(app => startPeer('receive', cfg, { topic: t, record: app.record, forever: true }, { app: PEER, timeout: 90000, env: { PEER_APP_DIR: app.dir } }))
    await Promise.all(receivers.map(r => r.ready))
    expect(await runPeer('emit', cfg, { topic: t, n: 200, chunk: 100 }, { app: PEER, timeout: 60000 })).toMatchObject({ emitted: 200 })
    const counts = () => apps.map(app => tally(records(app.record).map(r => r.i), 200))
    await until(() => counts().every(c => c.missing.length === 0), 30000, 'every message in both apps').catch(() => {})
    const c = counts()
    process.stdout.write(`conformance ${kindName}: two default apps got ${c.map(x => x.distinct).join(' and ')} of 200\n`)
    expect(c.map(x => x.distinct)).toEqual([200, 200])
  }]
]

// Topics of the multi-process scenarios (a module-level helper: those scenarios make no service here).
const topic4 = name => topicOf(name)

/** Registers the conformance suite of one kind (see kinds.js). */
function conformance(kindName) {
  const impl = kinds[kindName]
  describe(`conformance: ${kindName} (${impl.kind})`, () => {
    const ctx = { kindName, caps: impl.caps, services: [] }
    const notApplicable = []
    beforeAll(async () => {
      // Printed, not only in the titles: jest --silent shows skipped tests as a count.
      for (const line of notApplicable) process.stdout.write(`conformance ${kindName}: not applicable: ${line}\n`)
      ctx.env = await impl.setup()
    }, 60000)
    afterEach(async () => {
      killPeers()
      await Promise.all(ctx.services.splice(0).map(s => s.disconnect().catch(() => {})))
    })
    afterAll(async () => {
      await ctx.env?.teardown()
    }, 60000)
    /** Connects a service of this kind with a queue/box of its own; `out.value` gets its options. */
    ctx.open = async (name, extra = {}, out = {}) => {
      const options = ctx.env.config(unique(name), extra)
      out.value = options
      const svc = await cds.connect.to(options)
      ctx.services.push(svc)
      return svc
    }
    ctx.topic = name => topicOf(unique(name))
    for (const [title, needs, body] of scenarios) {
      const missing = needs.filter(c => !impl.caps[c])
      if (missing.length) {
        const why = missing.map(c => impl.notes?.[c] ?? `the kind has no '${c}'`).join('; ')
        notApplicable.push(`${title.split(':')[0]} (${why})`)
        test.skip(`${title} — not applicable: ${why}`, () => {})
      } else test(title, () => body(ctx), needs.includes('multiProcess') ? 180000 : 60000)
    }
  })
}

module.exports = { conformance, scenarios }
