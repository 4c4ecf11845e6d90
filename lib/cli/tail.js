'use strict'
// `cds-native-messaging tail [pattern…]`: prints messages as they flow, without taking them from the
// app: the file box is read without claiming; Redis streams with XREAD (no group); Redis pub/sub,
// MQTT and AMQP with a subscription or temporary queue of its own.
const fs = require('node:fs')
const { NativeMessagingError, codes } = require('../errors')
const { native, settled, streamNames } = require('./native')
const { loadApp, one } = require('./app')
const out = require('./output')

/** Runs until SIGINT/SIGTERM, `--count` messages, or `--timeout` ms. Resolves to the exit code. */
async function tail(patterns, opts) {
  const app = loadApp({ profile: opts.profile })
  const s = one(app, opts.service)
  const match = out.topicMatcher(patterns)
  const source = SOURCES[s.kind]?.(s, patterns)
  if (!source) throw new NativeMessagingError(codes.INVALID_CONFIG, `tail is not available for kind ${s.conf.kind} yet`)
  let stop = false
  const end = () => (stop = true)
  process.once('SIGINT', end)
  process.once('SIGTERM', end)
  const deadline = opts.timeout ? Date.now() + Number(opts.timeout) : Infinity
  const limit = opts.count ? Number(opts.count) : Infinity
  let seen = 0
  const progress = opts.json || !process.stderr.isTTY ? null : out.progress('seen')
  process.stderr.write(`tailing ${s.name} (${s.conf.kind}) ${source.what}${patterns.length ? ` for ${patterns.join(' ')}` : ''}; Ctrl-C to stop\n`)
  try {
    await source.ready
    process.stderr.write('listening\n')
    while (!stop && seen < limit && Date.now() < deadline) {
      const batch = await source.next(Math.max(1, Math.min(500, deadline - Date.now())))
      for (const m of batch) {
        if (!match(m.topic)) continue
        seen++
        print(m, opts)
        progress?.add()
        if (seen >= limit) break
      }
    }
  } finally {
    progress?.done()
    await source.close()
    process.off('SIGINT', end)
    process.off('SIGTERM', end)
  }
  return 0
}

function print(m, opts) {
  if (opts.json) out.json({ time: new Date().toISOString(), topic: m.topic, payload: parse(m.payload), ...(m.id ? { id: m.id } : {}) })
  else out.line(`${new Date().toISOString()}  ${m.topic}  ${out.pretty(m.payload)}`)
}

function parse(p) {
  try {
    return JSON.parse(p)
  } catch {
    return p
  }
}

const SOURCES = {
  /** Polls the box (and wakes on change notifications); a message is new when its line was not there before. */
  'file-based': s => {
    const file = s.options.file.path
    let known = new Map()
    let first = true
    let wake = null
    let watcher = null
    try {
      watcher = fs.watch(file, () => wake?.())
    } catch {
      /* box not there yet: polling finds it */
    }
    const read = () => {
      const now = new Map()
      const fresh = []
      for (const e of native().boxEntries(file)) {
        const key = `${e.topic} ${e.json}`
        const n = (now.get(key) || 0) + 1
        now.set(key, n)
        if (!first && n > (known.get(key) || 0)) fresh.push({ topic: e.topic, payload: e.json })
      }
      known = now
      first = false
      return fresh
    }
    read()
    return {
      what: `box ${file} (read without claiming)`,
      ready: Promise.resolve(),
      async next(wait) {
        const until = Date.now() + wait
        for (;;) {
          const fresh = read()
          if (fresh.length || Date.now() >= until) return fresh
          await new Promise(r => {
            const t = setTimeout(r, Math.min(20, until - Date.now()))
            wake = () => {
              clearTimeout(t)
              r()
            }
          })
          wake = null
        }
      },
      async close() {
        watcher?.close()
      }
    }
  },

  redis: (s, patterns) => {
    const { url, ca, mode } = s.options.redis
    const streams = mode === 'streams'
    const prefix = streams ? streamNames(s.options.redis).prefix : ''
    const redisPatterns = patterns.length ? patterns.map(p => p.replace(/\*\*/g, '*')) : ['*']
    const t = new (native().RedisTail)(url, ca, streams ? 'streams' : 'pubsub', prefix, redisPatterns)
    const what = streams ? `streams under '${prefix}' (XREAD, no consumer group)` : 'pub/sub (a subscription of its own)'
    return polled(t, what, streams ? m => !m.topic.endsWith(':dead-letter') : () => true)
  },

  mqtt: s => polled(new (native().MqttTail)(s.options.mqtt, ['#'], s.options.eventMesh), 'a QoS 0 subscription to # on a clean session of its own', () => true),

  amqp: s => polled(new (native().AmqpTail)(s.options.amqp, s.options.eventMesh), 'a temporary exclusive queue bound to # (RabbitMQ)', () => true)
}

/** A native tail (`next(wait)` connects on its first call): that first call is the readiness. */
function polled(t, what, keep) {
  let pending = settled(t.next(1))
  return {
    what,
    ready: pending,
    async next(wait) {
      let batch = []
      if (pending) {
        batch = await pending
        pending = null
      }
      if (!batch.length) batch = await settled(t.next(wait))
      return batch.filter(keep)
    },
    close: async () => t.close?.()
  }
}

module.exports = { tail }
