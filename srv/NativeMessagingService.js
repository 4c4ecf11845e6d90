'use strict'
const { randomUUID } = require('node:crypto')
const { cds, checkSingleCds } = require('../lib/cds')
const { native } = require('../lib/native')
const { withNarrowedBridge } = require('../lib/bridge')
const { NativeMessagingError, codes, fromFailure, fromNative } = require('../lib/errors')
const { canonical, number, str, COMMON } = require('../lib/options')
const { guardHandler, describeFailure } = require('../lib/handler-errors')
const { deliverBatch } = require('../lib/deliver')
const { BATCH, BULK, onBatchHandlers, batchableHandlers, processGroup, emitMany } = require('../lib/batch')
const { serializeOrReject, scheduleSubscribe, flushSubscribe } = require('../lib/outbound')
const { runHandlers, isNested, splitNested } = require('../lib/nested')
const { captureContext, deliversHere, deliverHere } = require('../lib/in-process')
const trace = require('../lib/trace')

const COMMON_NUMBERS = ['maxAttempts', 'retryDelay', 'maxRetryDelay', 'maxInFlight', 'maxBatch']

/**
 * Base class of every native kind. Keeps the contract of `cds.MessagingService` (`init`, `handle`,
 * `message4`, `processInboundMsg`, the declared-event bridge, the outbox) and hands everything below
 * it to one native engine.
 *
 * Subclasses implement `engineOptions(options, warn)` (option mapping only), declare their option
 * keys in `static optionKeys`, and may override `serialize(msg)` / `deserialize(topic, json)` for
 * their wire format.
 */
class NativeMessagingService extends cds.MessagingService {
  /** The option keys of this kind (besides {@link COMMON}); a nested object maps its own keys. */
  static optionKeys = {}

  async init() {
    checkSingleCds()
    const { NativeEngine } = native()
    // Warnings of the option mapping are logged once `this.LOG` exists (super.init creates it).
    const warnings = []
    const warn = message => warnings.push(message)
    let opts
    try {
      opts = this._nativeOptions(warn)
    } catch (e) {
      flush(cds.log(this.name), this.name, warnings)
      throw fromNative(e)
    }
    const log = (level, message) => {
      const LOG = this.LOG
      if (LOG && LOG[`_${level}`] !== false && typeof LOG[level] === 'function') LOG[level](message)
    }
    this._handlerTimeout = number('handlerTimeout', this.options.handlerTimeout)
    try {
      this._engine = new NativeEngine(opts, log, (ticket, results) => this._sent(ticket, results))
    } catch (e) {
      flush(cds.log(this.name), this.name, warnings)
      throw fromNative(e)
    }
    // Mutable state lives in one object: cds runs `handle` on transaction objects derived from the
    // service (Object.create), where assigning `this.x = …` would only shadow the service's field.
    this._native = { outgoing: [], sending: new Map(), ticket: 0, keepAlive: null, listening: false, closed: false, onFailure: null, matched: new Map(), inProcess: null, counted: { delivered: 0, acked: 0 }, service: this }
    await withNarrowedBridge(() => super.init())
    flush(this.LOG, this.name, warnings)
    this._onShutdown = () => this.disconnect()
    cds.on('shutdown', this._onShutdown)
    if (this.listenImmediately) this.startListening()
    else cds.once('listening', () => this.startListening())
  }

  /** The native engine's options: `this.options` with canonical keys, the common options and the kind's mapping (also used by the CLI). */
  _nativeOptions(warn) {
    this.options = canonical(this.options || {}, { ...COMMON, ...this.constructor.optionKeys }, warn)
    return { ...mapCommon(this.options), format: str('format', this.options.format), ...this.engineOptions(this.options, warn), name: this.name }
  }

  /** Maps `cds.requires.<service>` to the native engine's options; implemented per kind. */
  engineOptions() {
    throw new NativeMessagingError(codes.INTERNAL, `${this.constructor.name} does not implement engineOptions()`)
  }

  /** Whether consumption starts at `init` rather than at `cds.once('listening')`. */
  get listenImmediately() {
    return false
  }

  /**
   * Whether the first attempt of an emit is delivered to this service's own handlers in this
   * process, without the engine (see lib/in-process.js); the engine redelivers what failed.
   */
  get deliversInProcess() {
    return false
  }

  /** Whether a `'*'` handler consumes every topic (default: only with `forceListening: true`). */
  get consumesAll() {
    return !!(this._listenToAll.value && this.options.forceListening)
  }

  /** The wire body of an outbound message (after `message4`). */
  serialize(msg) {
    return JSON.stringify({ data: msg.data, headers: msg.headers })
  }

  /** The message for `processInboundMsg` from a topic and its parsed wire body. */
  deserialize(topic, json) {
    return { event: topic, data: json.data, headers: json.headers || {} }
  }

  /** CAP's topic preparation (prefixes, `$appId`), plus `$namespace` from the binding. */
  prepareTopic(topic, inbound) {
    const t = super.prepareTopic(topic, inbound)
    return t.includes('$namespace') ? t.replace(/\$namespace/g, this.bindingNamespace ?? '') : t
  }

  /** The namespace of the binding (`credentials.namespace`), if any. */
  get bindingNamespace() {
    return this.options.credentials?.namespace
  }

  /**
   * With `format: 'cloudevents'`: fills the missing CloudEvents 1.0 attributes; headers the app set
   * are kept. The engine validates the result on `publish` (INVALID_DATA_FORMAT naming the attribute).
   */
  prepareHeaders(headers, event) {
    if (this.options.format !== 'cloudevents') return
    // (undefined only: a header the app set to null stays, and fails validation, as it is on the wire)
    const fill = (key, value) => headers[key] === undefined && (headers[key] = value())
    fill('id', randomUUID)
    fill('type', () => event)
    fill('source', () => (this.bindingNamespace ? `/${this.bindingNamespace.replace(/^\//, '')}` : `/default/sap.cap/${process.pid}`))
    fill('time', () => new Date().toISOString())
    fill('datacontenttype', () => 'application/json')
    fill('specversion', () => '1.0')
  }

  on(event, ...rest) {
    // (a handler from `onBatch` is already guarded)
    if (rest.length && !rest[rest.length - 1]?.[BATCH]) rest[rest.length - 1] = guardHandler(event, rest[rest.length - 1])
    const res = super.on(event, ...rest)
    if (this._native?.listening) scheduleSubscribe(this)
    return res
  }

  /**
   * Registers a batch handler for `event` (opt-in; plain `on` is unchanged): `handler(msgs)`
   * receives an array of inbound messages (`{ event, data, headers, inbound: true }`, delivery
   * order) and runs in one CAP transaction for all of them. When it throws, the transaction is
   * rolled back and each message is retried alone (`handler([msg])`, in its own transaction), so
   * only a failing message is redelivered or dead-lettered. See the README, "Batched inbound".
   * @param {string | string[]} event
   * @param {(msgs: object[]) => any} handler
   */
  onBatch(event, handler) {
    for (const e of Array.isArray(event) ? event : [event]) this.on(e, onBatchHandlers(e, handler))
    if (this._native) this._native.batched = true
    return this
  }

  /**
   * Emits many messages at once (`[{ event, data, headers }, …]`); resolves — never rejects — with
   * one `Promise.allSettled` entry per message, in order. See the README, "Bulk emit".
   */
  emitMany(messages) {
    return emitMany(this, messages)
  }

  async handle(msg) {
    if (msg.inbound) return super.handle(msg)
    return this._send(msg)
  }

  /**
   * The outbound part of `handle`: `message4`, serialise, and queue for this tick's publish call.
   * `msg[BULK]` (set by `emitMany`) names the messages that may share one publish call on the local kind.
   */
  _send(msg) {
    const bulk = msg[BULK]
    const _msg = this.message4(msg)
    trace.outbound(_msg)
    if (this.options.structured && typeof _msg.data === 'string') _msg.data = { message: _msg.data }
    let payload
    try {
      payload = serializeOrReject(m => this.serialize(m), _msg)
    } catch (e) {
      return Promise.reject(e)
    }
    const nested = isNested(this)
    // (on the service itself: `handle` may run on a transaction derived from it)
    if (deliversHere(this, _msg.event)) return deliverHere(this._native.service, _msg.event, payload, nested)
    return new Promise((resolve, reject) => {
      const state = this._native
      const ce = isCloudEvent(_msg.headers)
      // A multitenant app's emit carries its tenant (the Event Mesh REST kinds publish with that tenant's token).
      const t = cds.env.requires.multitenancy ? cds.context?.tenant : undefined
      const tenant = typeof t === 'string' && t ? t : undefined
      if (state.outgoing.push({ topic: _msg.event, payload, ce, tenant, resolve, reject, nested, bulk }) === 1) queueMicrotask(() => this._flush())
    })
  }

  /** Sends every emit of this tick to the engine in one call. */
  _flush() {
    flushSubscribe(this)
    const state = this._native
    const queued = state.outgoing
    state.outgoing = []
    for (const [batch, nested] of splitNested(queued)) {
      // A local emit resolves when its handlers finished, and a publish call resolves when all of
      // its messages did: each goes in a call of its own, so one whose handler never settles does
      // not hold the emits of the same tick (issue #14, defect 5).
      // The messages of one `emitMany` (`bulk`) resolve together anyway: they go in one call.
      if (this.listenImmediately) for (const group of byBulk(batch)) this._publish(group, nested)
      else this._publish(batch, nested)
    }
  }

  _publish(batch, nested) {
    const topics = new Array(batch.length)
    const payloads = new Array(batch.length)
    const cloudEvents = new Array(batch.length)
    let tenants
    for (let i = 0; i < batch.length; i++) {
      topics[i] = batch[i].topic
      payloads[i] = batch[i].payload
      cloudEvents[i] = batch[i].ce
      if (batch[i].tenant) (tenants ??= new Array(batch.length).fill(null))[i] = batch[i].tenant
    }
    // `send` returns at once; the engine calls `_sent(ticket, results)` when the batch is done
    // (a Promise per call from the binding would cost a thread-safe function each).
    const state = this._native
    const ticket = (state.ticket = (state.ticket + 1) >>> 0)
    state.sending.set(ticket, batch)
    // the engine's callback does not keep the process alive: this timer does, while sends are out
    if (state.sending.size === 1) (state.keepAlive ??= setInterval(() => {}, 2 ** 31 - 1)).ref()
    try {
      this._engine.send(ticket, topics, payloads, cloudEvents, nested, tenants)
    } catch (err) {
      this._sent(ticket, null, fromNative(err))
    }
  }

  /** The engine's results for the batch sent as `ticket` (`err`: the batch could not be sent). */
  _sent(ticket, results, err) {
    const state = this._native
    const batch = state.sending.get(ticket)
    if (!batch) return
    state.sending.delete(ticket)
    if (state.sending.size === 0) state.keepAlive.unref()
    for (let i = 0; i < batch.length; i++) {
      const r = results?.[i]
      if (err) batch[i].reject(err)
      else if (r == null) batch[i].resolve()
      else batch[i].reject(fromFailure(r))
    }
  }

  /** Starts consuming the subscribed topics. Called at `cds.once('listening')`; call it yourself in a script without a server. */
  async startListening() {
    const state = this._native
    if (state.listening || state.closed) return
    state.listening = true
    this._subscribe()
    const g = this._engine.guarantee()
    this.LOG._info && this.LOG.info(`${this.name}: ${g.summary}`)
    // (the engine makes every later emit wait until this consumer has started: an emit made right
    // after connect must not find it not yet started and count as "no receivers")
    const context = this.deliversInProcess ? captureContext() : null
    const started = this._engine.listen(batch => this._deliver(batch)).then(f => {
      if (f) throw fromFailure(f)
    })
    try {
      await started
      state.inProcess = context
    } catch (e) {
      // disconnected before the consumer started: nothing to report (and no unhandled rejection
      // from the start that init() did not await)
      if (state.closed) return
      const err = fromNative(e)
      this.LOG.error(`${this.name}: cannot start consuming: ${err.message}`)
      throw err
    }
  }

  _subscribe() {
    if (this._native.closed) return
    this._engine.subscribe([...this.subscribedTopics.keys()], this.consumesAll)
  }

  /** Called by the engine with a batch; resolves to one outcome per message (null = ack). */
  _deliver(batch) {
    const { topics, subscriptions } = batch
    // The engine names the subscription (MQTT: the wildcard filter) each topic was delivered for;
    // `wildcarded(topic)` answers from here instead of matching filters per message.
    const matched = this._native.matched
    // (topic → filter does not change while filters are only added; bounded, oldest entries go first)
    for (let i = 0; i < topics.length; i++) {
      if (subscriptions[i] === topics[i] || matched.get(topics[i]) === subscriptions[i]) continue
      matched.set(topics[i], subscriptions[i])
      if (matched.size > 10000) matched.delete(matched.keys().next().value)
    }
    const process = (topic, payload, attempt) => this._process(topic, payload, attempt)
    return deliverBatch(this._engine, batch, process, this._handlerTimeout, this._native.batched && this._groups(batch))
  }

  /**
   * The groups of `batch` for batch handlers: per event whose handlers all come from `onBatch`,
   * the indices of its first deliveries (a redelivered message is processed alone), with a function
   * that processes them in one transaction. `undefined` when there is none.
   */
  _groups({ topics, payloads, attempts, subscriptions }) {
    // with CAP's inbox every message goes into it one by one (processInboundMsg)
    if (this.options.inboxed || this.options.inbox) return undefined
    let byEvent
    const subscribed = this.subscribedTopics
    for (let i = 0; i < topics.length; i++) {
      if (attempts[i] > 1) continue
      const event = subscribed.get(subscriptions[i]) ?? subscribed.get(topics[i])
      if (event === undefined) continue
      byEvent ??= new Map()
      const indices = byEvent.get(event)
      if (indices) indices.push(i)
      else byEvent.set(event, [i])
    }
    if (!byEvent) return undefined
    const groups = []
    for (const [event, indices] of byEvent) {
      if (indices.length < 2) continue
      const handlers = batchableHandlers(this, event)
      if (!handlers) continue
      const items = indices.map(i => ({ topic: topics[i], payload: payloads[i], attempt: attempts[i] }))
      groups.push({ indices, run: (settle, timeout) => processGroup(this, event, handlers, items, settle, timeout) })
    }
    return groups.length ? groups : undefined
  }

  async _process(topic, payload, attempt) {
    let msg
    try {
      msg = this.deserialize(topic, JSON.parse(payload))
    } catch (e) {
      const err = new NativeMessagingError(codes.INVALID_DATA_FORMAT, `message on topic '${topic}' is not valid JSON: ${e.message}`)
      const raw = { event: topic, data: payload, headers: {}, inbound: true }
      return this._failure(err, raw, attempt, true)
    }
    try {
      await trace.inbound(this, msg, () => runHandlers(this, () => this.processInboundMsg({}, msg)))
      return null
    } catch (e) {
      return this._failure(e || new Error('handler rejected without an error'), msg, attempt, false)
    }
  }

  /**
   * Registers the application's error hook, called when handlers fail or a message cannot be parsed
   * (`err.code === 'INVALID_DATA_FORMAT'`). It returns (or resolves to) `'ack'` to drop the
   * message as handled, `'dead-letter'` to give up now, or `'retry'` / nothing for the default
   * policy (redelivery up to `maxAttempts`). Modelled on CAP Java's messaging error handler.
   * @param {(err: Error, msg: object, info: { attempt: number, maxAttempts: number }) => any} hook
   */
  onFailure(hook) {
    if (typeof hook !== 'function') throw new NativeMessagingError(codes.INVALID_CONFIG, 'onFailure(hook) needs a function')
    this._native.onFailure = hook
    return this
  }

  async _failure(err, msg, attempt, unparsable) {
    let decision
    const hook = this._native.onFailure
    if (hook) {
      try {
        decision = await hook(err, msg, { attempt, maxAttempts: this._engine.maxAttempts })
      } catch (e) {
        this.LOG.error(`${this.name}: the onFailure hook threw for a message on topic '${msg.event}':`, e)
      }
    }
    if (decision === 'ack') return null
    const { message, code, unrecoverable } = describeFailure(err)
    return {
      message,
      code,
      unrecoverable: decision === 'dead-letter' || (decision !== 'retry' && (unparsable || unrecoverable || code === 'NO_HANDLER_FOUND'))
    }
  }

  /** Dead letters kept in memory by the engine (local kind), oldest first. */
  deadLetters() {
    return this._engine ? this._engine.deadLetters() : []
  }

  /** The engine's counters: emitted, emitFailures, delivered, acked, redelivered, deadLettered, inFlight, reconnects, lastError. */
  stats() {
    return this._engine.stats()
  }

  /** Stops consuming and releases every native resource; idempotent. */
  async disconnect() {
    if (!this._native || this._native.closed) return
    this._native.closed = true
    if (this._onShutdown) cds.off?.('shutdown', this._onShutdown)
    let failure
    try {
      failure = await this._engine?.close()
    } catch (e) {
      throw fromNative(e)
    }
    if (failure) throw fromFailure(failure)
  }
}

function mapCommon(o) {
  const out = {}
  for (const k of COMMON_NUMBERS) {
    const v = number(k, o[k])
    if (v !== undefined) out[k] = v
  }
  return out
}

/** Queued emits in publish calls: one per message, but one per `emitMany` call for its messages. */
function byBulk(batch) {
  const groups = []
  const bulks = new Map()
  for (const m of batch) {
    if (m.bulk === undefined) groups.push([m])
    else if (bulks.has(m.bulk)) bulks.get(m.bulk).push(m)
    else {
      const group = [m]
      bulks.set(m.bulk, group)
      groups.push(group)
    }
  }
  return groups
}

function flush(LOG, name, warnings) {
  for (const w of warnings.splice(0)) LOG.warn(`${name}: ${w}`)
}

/**
 * Whether the headers hold the CloudEvents attributes `id`, `source`, `specversion` and `type`:
 * @sap/cds's broker kinds then send the message as `application/cloudevents+json`.
 */
function isCloudEvent(headers) {
  return !!headers && 'id' in headers && 'source' in headers && 'specversion' in headers && 'type' in headers
}

module.exports = NativeMessagingService
