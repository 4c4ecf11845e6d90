'use strict'
// `cds-native-messaging doctor [service]`: for every native messaging service of the app, where its
// configuration and credentials come from, whether the backend is reachable (connect and
// authenticate, through the native engine), what is there, and the delivery contract.
const fs = require('node:fs')
const { fromNative } = require('../errors')
const { native, settled, streamNames } = require('./native')
const { loadApp, pick } = require('./app')
const out = require('./output')

const TIMEOUT = 3000

/** Runs the checks; resolves to the process exit code (1 when something is wrong). */
async function doctor(name, opts) {
  const app = loadApp({ profile: opts.profile })
  const reports = []
  for (const s of pick(app, name)) reports.push(await check(s, opts))
  if (opts.json) out.json(reports)
  else for (const r of reports) print(r)
  return reports.some(r => r.findings.some(f => f.severity === 'error')) ? 1 : 0
}

async function check(s, opts) {
  const r = {
    service: s.name,
    kind: s.conf.kind,
    configuration: s.origin.config,
    credentials: s.origin.credentials,
    facts: {},
    contract: undefined,
    findings: []
  }
  const error = (what, fix) => r.findings.push({ severity: 'error', what, fix })
  const warn = (what, fix) => r.findings.push({ severity: 'warning', what, fix })
  if (s.error) {
    error(`the configuration is invalid: ${s.error.message}`, `fix cds.requires.${s.name}`)
    return r
  }
  let engine
  try {
    const checker = CHECKS[s.kind]
    if (checker) await checker(s, r, { error, warn, opts })
    if (s.kind !== 'composite') {
      const { NativeEngine } = native()
      // Only asked for its contract: constructing an engine opens no connection (a missing box
      // file is created, as the app would).
      engine = new NativeEngine({ ...s.options, name: s.name }, null)
      r.contract = engine.guarantee().summary
    }
  } catch (e) {
    error(fromNative(e).message, 'see the message')
  } finally {
    await engine?.close().catch(() => {})
  }
  return r
}

const CHECKS = {
  'file-based': (s, r, { error, warn }) => {
    const file = s.options.file.path
    const dead = s.options.file.deadLetterFile ?? `${file}.dead`
    r.facts.box = file
    if (!fs.existsSync(file)) {
      warn(`the box ${file} did not exist (created now, as the app would)`, 'check the path if the app runs already: it would have created it')
      return
    }
    try {
      fs.accessSync(file, fs.constants.R_OK | fs.constants.W_OK)
    } catch {
      return error(`the box ${file} is not readable and writable by this user`, 'fix its permissions, or point cds.requires.<service>.file to a box this user can write')
    }
    const entries = native().boxEntries(file)
    r.facts.waiting = entries.filter(e => e.attempt == null).length
    r.facts.inProcess = entries.length - r.facts.waiting
    r.facts.deadLetterFile = dead
    r.facts.deadLetters = native().boxEntries(dead).length
    if (r.facts.deadLetters) warn(`${r.facts.deadLetters} dead letter(s) in ${dead}`, 'inspect them with `cds-native-messaging dead-letters list`')
    const lock = `${file}.lock`
    try {
      const age = Date.now() - fs.statSync(lock).mtimeMs
      const stale = s.options.file.staleLockAfter ?? 10000
      r.facts.lockAgeMs = Math.round(age)
      if (age > stale) warn(`the lock ${lock} is ${Math.round(age / 1000)} s old`, 'a process holding it may hang; it is removed as stale when its owner is dead')
    } catch {
      /* no lock: fine */
    }
  },

  redis: async (s, r, { error, warn, opts }) => {
    const { url, ca, mode } = s.options.redis
    let server
    try {
      server = await settled(native().redisProbe(url, ca, TIMEOUT))
    } catch (e) {
      return error(fromNative(e).message, redisFix(fromNative(e).message))
    }
    Object.assign(r.facts, { address: server.address, broker: `${server.product} ${server.version ?? '(version not told)'}`, mode })
    if (mode !== 'streams') return
    const { prefix, group, deadLetterStream: dead } = streamNames(s.options.redis)
    Object.assign(r.facts, { group, deadLetterStream: dead })
    const topics = opts.topic || []
    const keys = topics.length ? topics.map(t => prefix + t) : (await settled(native().redisStreamKeys(url, ca, TIMEOUT, prefix))).filter(k => k !== dead && !k.endsWith(':dead-letter'))
    const facts = await settled(native().redisStreams(url, ca, TIMEOUT, keys, group))
    r.facts.streams = facts.map(f => ({ key: f.key, exists: f.exists, length: f.length, group: f.group, pending: f.pending, lag: f.lag }))
    for (const f of facts) {
      if (!f.exists) error(`stream ${f.key} does not exist`, 'it is created by the first emit or when the app subscribes; check the topic and streamPrefix')
      else if (!f.group) error(`consumer group (queue) '${group}' does not exist on stream ${f.key}`, `start the app (it creates the group), or fix queue / streamPrefix in cds.requires.${s.name}`)
    }
    if (!topics.length && !facts.length) warn(`no streams under prefix '${prefix}' yet`, 'they appear with the first emit; name topics to check with --topic')
    const deadFacts = await settled(native().redisStreams(url, ca, TIMEOUT, [dead], group))
    r.facts.deadLetters = deadFacts[0]?.length ?? 0
    if (r.facts.deadLetters) warn(`${r.facts.deadLetters} dead letter(s) in ${dead}`, 'inspect them with `cds-native-messaging dead-letters list`')
  },

  mqtt: async (s, r, { error, warn }) => {
    const o = s.options.mqtt
    const em = s.options.eventMesh
    try {
      r.facts.broker = await settled(native().mqttProbe(o, TIMEOUT, em))
    } catch (e) {
      const m = fromNative(e).message
      return error(m, /user name or password|not authori[sz]ed|bad user|credentials/i.test(m) ? 'check username and password (cds bind / VCAP_SERVICES / credentials)' : /token|oauth|401|403/i.test(m) ? 'check the OAuth2 client (token endpoint, client id and secret or certificate) of the binding' : /refused|timed out|CONNACK/i.test(m) ? 'nothing answers there: start the broker, or fix the url' : 'check the url and credentials')
    }
    r.facts.clientId = o.clientId
    if (o.watchBrokerDrops !== false) {
      // Mosquitto's $SYS count (README: native-mqtt-messaging, Broker limits); other brokers have none
      const dropped = await settled(native().mqttBrokerDrops(o, TIMEOUT, em)).catch(() => null)
      // a fact, not a finding: the count is broker-wide and never goes back down until a restart
      if (dropped != null) r.facts.brokerDropped = `${dropped} message(s) since the broker started, all its clients (queue limits: max_queued_messages)`
    }
    const base = o.deadLetterTopic ?? `dead-letter/${o.clientId}`
    if (o.deadLetterRetain === false) {
      r.facts.deadLetterTopic = `${base}/<topic>/<id> (not retained)`
      warn('dead letters are not retained (deadLetterRetain: false): they reach only the subscribers of that moment, and `dead-letters` cannot list them', 'subscribe to them with a persistent session of your own, or turn deadLetterRetain on if the broker keeps retained messages')
      return
    }
    r.facts.deadLetterTopic = `${base}/<topic>/<id> (retained)`
    try {
      r.facts.deadLetters = (await settled(native().mqttDeadLetters(o, TIMEOUT, em))).length
      if (r.facts.deadLetters) warn(`${r.facts.deadLetters} dead letter(s) kept under ${base}/#`, 'inspect them with `cds-native-messaging dead-letters list`')
    } catch (e) {
      error(`cannot read the dead letters under ${base}/#: ${fromNative(e).message}`, 'check that the user may subscribe to the dead-letter topic')
    }
  },
  amqp: async (s, r, { error, warn }) => {
    const em = s.options.eventMesh
    const o = { ...s.options.amqp, connectTimeout: 3 * TIMEOUT }
    try {
      // RabbitMQ answers a failed SASL authentication only after about 3 s.
      r.facts.broker = await settled(native().amqpProbe(o, em))
    } catch (e) {
      const m = fromNative(e).message
      return error(m, /authentication|SASL/i.test(m) ? 'check user and password (cds bind / VCAP_SERVICES / credentials)' : /token|oauth|401|403/i.test(m) ? 'check the OAuth2 client (token endpoint, client id and secret or certificate) of the binding' : 'check the url and that the broker runs')
    }
    r.facts.queue = s.options.amqp.queue
    const problem = await settled(native().amqpQueueProblem(o, em))
    if (problem) return error(`queue '${s.options.amqp.queue}' cannot be consumed: ${problem}`, `start the app once (it creates the queue unless queue.provision is false), create the queue, or fix queue.name in cds.requires.${s.name}`)
    let dlq
    try {
      dlq = native().amqpDeadLetterQueue(s.options.amqp)
    } catch (e) {
      r.facts.deadLetterQueue = `none: ${fromNative(e).message.replace(/^.*?has no dead-letter queue configured/, 'not configured')}`
      return
    }
    r.facts.deadLetterQueue = dlq
    try {
      r.facts.deadLetters = (await settled(native().amqpDeadLetters(o, em))).length
      if (r.facts.deadLetters) warn(`${r.facts.deadLetters} dead letter(s) in queue ${dlq}`, 'inspect them with `cds-native-messaging dead-letters list`')
    } catch (e) {
      error(`the dead-letter queue '${dlq}' cannot be read: ${fromNative(e).message}`, 'start the app once (it creates the dead-letter queue with the queue), or create it and route the queue\'s dead letters there')
    }
  },

  composite: (s, r) => {
    r.facts.routes = s.conf.routes
  }
}

function redisFix(message) {
  if (/WRONGPASS|NOAUTH|invalid password|invalid username-password|AUTH/i.test(message))
    return 'authentication failed: check the password in credentials (cds bind / VCAP_SERVICES / credentials.password or the url)'
  if (/refused/i.test(message)) return 'nothing listens there: start Redis, or fix host/port in credentials'
  if (/no answer|timed out|timeout/i.test(message)) return 'the host does not answer: check host, port, firewall and TLS (rediss://)'
  return 'check the url and credentials'
}

function print(r) {
  const row = (label, v) => out.line(`  ${(label + ':').padEnd(20)}${v}`)
  out.line(`${r.service}  (${r.kind})`)
  row('configuration', r.configuration.join(', '))
  row('credentials', r.credentials)
  for (const [k, v] of Object.entries(r.facts)) {
    if (k === 'streams') {
      for (const f of v) row('stream', `${f.key}: ${f.exists ? `${f.length} entries, group ${f.group ? `present (pending ${f.pending}${f.lag != null ? `, lag ${f.lag}` : ''})` : 'MISSING'}` : 'MISSING'}`)
    } else row(k.replace(/[A-Z]/g, c => ' ' + c.toLowerCase()), typeof v === 'object' ? JSON.stringify(v) : v)
  }
  if (r.contract) row('contract', r.contract)
  if (!r.findings.length) out.line('  ✔ ok')
  for (const f of r.findings) out.line(`  ${f.severity === 'error' ? '✘' : '!'} ${f.what}\n      → ${f.fix}`)
  out.line()
}

module.exports = { doctor }
