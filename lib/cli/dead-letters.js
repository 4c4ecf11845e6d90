'use strict'
// `cds-native-messaging dead-letters list|show|redeliver|purge`: each kind's dead-letter place —
// the file box's `<box>.dead`, the Redis streams dead-letter stream, the MQTT dead letters kept
// retained under `<deadLetterTopic>/<topic>/<id>`, the AMQP (RabbitMQ) dead-letter queue.
const { native, settled, streamNames } = require('./native')
const { NativeMessagingError, codes, fromNative } = require('../errors')
const { loadApp, one } = require('./app')
const out = require('./output')

const TIMEOUT = 5000

const PLACES = {
  'file-based': s => {
    const box = s.options.file.path
    const dead = s.options.file.deadLetterFile ?? `${box}.dead`
    return {
      where: dead,
      // The line format has no time: age filters cannot apply.
      hasTime: false,
      async list() {
        return native()
          .boxEntries(dead)
          .map((e, i) => ({ id: String(i + 1), topic: e.topic, payload: e.json }))
      },
      async take(entries, redeliver) {
        return native().boxTakeDead(
          box,
          dead,
          entries.map(e => e.topic),
          entries.map(e => e.payload),
          redeliver
        )
      }
    }
  },
  redis: s => {
    const { url, ca, mode } = s.options.redis
    if (mode !== 'streams') return inMemory(s)
    const key = streamNames(s.options.redis).deadLetterStream
    return {
      where: `stream ${key}`,
      hasTime: true,
      async list() {
        return (await settled(native().redisDeadLetters(url, ca, TIMEOUT, key))).map(d => ({
          id: d.id,
          topic: d.topic,
          payload: d.payload,
          error: d.error,
          attempts: d.attempts,
          stream: d.stream,
          time: new Date(d.time).toISOString(),
          _ms: d.time
        }))
      },
      async take(entries, redeliver) {
        return settled(native().redisTakeDeadLetters(url, ca, TIMEOUT, key, entries.map(e => e.id), redeliver))
      }
    }
  },
  local: s => inMemory(s),
  mqtt: s => {
    const o = s.options.mqtt
    const base = o.deadLetterTopic ?? `dead-letter/${o.clientId}`
    if (o.deadLetterRetain === false)
      notListable(s, `deadLetterRetain is off: dead letters are published (not retained) to '${base}/<topic>/<id>' and reach only the subscribers of that moment; nothing keeps them to list`)
    const em = s.options.eventMesh
    return {
      where: `retained topics ${base}/#`,
      hasTime: true,
      async list() {
        return (await settled(native().mqttDeadLetters(o, TIMEOUT, em))).map(d => ({
          id: d.id,
          topic: d.topic,
          payload: d.payload,
          mqttTopic: d.mqttTopic,
          time: new Date(d.time).toISOString(),
          _ms: d.time
        }))
      },
      async take(entries, redeliver) {
        return settled(native().mqttTakeDeadLetters(o, TIMEOUT, entries.map(e => e.id), redeliver, em))
      }
    }
  },
  amqp: s => {
    const o = s.options.amqp
    let dlq
    try {
      dlq = native().amqpDeadLetterQueue(o)
    } catch (e) {
      notListable(s, fromNative(e).message)
    }
    const em = s.options.eventMesh
    return {
      where: `queue ${dlq}`,
      // when, only if the broker tells (RabbitMQ 3.x does not pass x-death to AMQP 1.0 consumers)
      hasTime: true,
      timeMissing: `${dlq}: the broker does not tell when these messages were dead-lettered (RabbitMQ 3.x passes no x-death to AMQP 1.0 clients); filter with --topic or ids`,
      async list() {
        return (await settled(native().amqpDeadLetters(o, em))).map(d => ({
          id: d.id,
          topic: d.topic,
          payload: d.payload,
          ...(d.reason ? { reason: d.reason } : {}),
          ...(d.queue ? { queue: d.queue } : {}),
          ...(d.time != null ? { time: new Date(d.time).toISOString() } : {}),
          _ms: d.time ?? undefined
        }))
      },
      async take(entries, redeliver) {
        return settled(native().amqpTakeDeadLetters(o, entries.map(e => e.id), redeliver, em))
      }
    }
  }
}

function inMemory(s) {
  return notListable(s, `${s.conf.kind}${s.options.redis?.mode ? ` (mode ${s.options.redis.mode})` : ''} keeps dead letters in the app's memory: use srv.deadLetters() in the app`)
}

function notListable(s, why) {
  throw new NativeMessagingError(codes.INVALID_CONFIG, `${s.name}: ${why}`)
}

function place(opts) {
  const app = loadApp({ profile: opts.profile })
  const s = one(app, opts.service)
  const make = PLACES[s.kind]
  if (!make) throw new NativeMessagingError(codes.INVALID_CONFIG, `dead-letters is not available for kind ${s.conf.kind}`)
  return { s, p: make(s) }
}

async function select(p, ids, opts) {
  const all = await p.list()
  const match = out.topicMatcher(opts.topic)
  const age = out.duration(opts.olderThan)
  if (age !== undefined && !p.hasTime)
    throw new NativeMessagingError(codes.INVALID_CONFIG, `--older-than: ${p.where} records no time per message (the @sap/cds line format); filter with --topic or ids`)
  if (age !== undefined && p.timeMissing && all.some(e => e._ms === undefined)) throw new NativeMessagingError(codes.INVALID_CONFIG, `--older-than: ${p.timeMissing}`)
  const now = Date.now()
  return all.filter(e => (!ids?.length || ids.includes(e.id)) && match(e.topic) && (age === undefined || (e._ms !== undefined && now - e._ms >= age)))
}

function clean(e) {
  const rest = { ...e }
  delete rest._ms
  return rest
}

async function list(opts) {
  const { p } = place(opts)
  const entries = await select(p, null, opts)
  if (opts.json) return out.json(entries.map(clean)), 0
  out.line(`${entries.length} dead letter(s) in ${p.where}`)
  for (const e of entries)
    out.line(`  ${e.id}  ${e.time ? e.time + '  ' : ''}${e.topic}  ${e.attempts ? `${e.attempts} attempt(s)  ` : ''}${e.error ? `error: ${e.error}  ` : ''}${e.reason ? `${e.reason}  ` : ''}${truncate(out.pretty(e.payload))}`)
  return 0
}

async function show(id, opts) {
  const { p } = place(opts)
  const [e] = await select(p, [id], opts)
  if (!e) throw new NativeMessagingError(codes.INVALID_CONFIG, `no dead letter '${id}' in ${p.where}; see \`dead-letters list\``)
  if (opts.json) out.json(clean(e))
  else {
    const { payload, ...meta } = clean(e)
    const width = Math.max(9, ...Object.keys(meta).map(k => k.length + 2))
    for (const [k, v] of Object.entries(meta)) out.line(`${(k + ':').padEnd(width)}${v}`)
    let body = payload
    try {
      body = JSON.stringify(JSON.parse(payload), null, 2)
    } catch {
      /* as is */
    }
    out.line(body)
  }
  return 0
}

/** `redeliver` (put back, with headers: the message line / payload is moved as is) or `purge`. */
async function move(ids, opts, redeliver) {
  const { s, p } = place(opts)
  if (!redeliver && !ids.length && !opts.topic && !opts.olderThan && !opts.all)
    throw new NativeMessagingError(codes.INVALID_CONFIG, 'purge removes dead letters for good: name ids, filter with --topic / --older-than, or pass --all')
  const entries = await select(p, ids, opts)
  const progress = opts.json ? null : out.progress(redeliver ? 'redelivered' : 'purged')
  let moved = 0
  for (let i = 0; i < entries.length; i += 100) {
    const chunk = entries.slice(i, i + 100)
    const n = await p.take(chunk, redeliver)
    moved += n
    progress?.add(n)
  }
  progress?.done()
  const result = { service: s.name, where: p.where, selected: entries.length, [redeliver ? 'redelivered' : 'purged']: moved }
  if (opts.json) out.json(result)
  else
    out.line(
      `${redeliver ? 'redelivered' : 'purged'} ${moved} of ${entries.length} selected dead letter(s) from ${p.where}` +
        (moved < entries.length ? ` (${entries.length - moved} were gone already)` : '')
    )
  return 0
}

function truncate(s, n = 120) {
  return s.length > n ? s.slice(0, n) + '…' : s
}

module.exports = {
  list,
  show,
  redeliver: (ids, opts) => move(ids, opts, true),
  purge: (ids, opts) => move(ids, opts, false)
}
