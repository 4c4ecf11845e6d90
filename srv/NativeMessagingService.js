'use strict'
const cds = require('@sap/cds')
const { native } = require('../lib/native')
const { withNarrowedBridge } = require('../lib/bridge')
const { NativeMessagingError, codes, fromCoded, fromNative } = require('../lib/errors')

const COMMON_OPTIONS = ['maxAttempts', 'retryDelay', 'maxRetryDelay', 'maxInFlight', 'maxBatch']

/**
 * Base class of every native kind. Keeps the contract of `cds.MessagingService` (`init`, `handle`,
 * `message4`, `processInboundMsg`, the declared-event bridge, the outbox) and hands everything below
 * it to one native engine.
 *
 * Subclasses implement `engineOptions(options)` (option mapping only) and may override
 * `serialize(msg)` / `deserialize(topic, json)` for their wire format.
 */
class NativeMessagingService extends cds.MessagingService {
  async init() {
    const { NativeEngine } = native()
    let opts
    try {
      opts = { ...mapCommon(this.options), ...this.engineOptions(this.options || {}), name: this.name }
    } catch (e) {
      throw fromNative(e)
    }
    const log = (level, message) => {
      const LOG = this.LOG
      if (LOG && LOG[`_${level}`] !== false && typeof LOG[level] === 'function') LOG[level](message)
    }
    this._maxAttempts = opts.maxAttempts ?? 3
    try {
      this._engine = new NativeEngine(opts, log)
    } catch (e) {
      throw fromNative(e)
    }
    // Mutable state lives in one object: cds runs `handle` on transaction objects derived from the
    // service (Object.create), where assigning `this.x = …` would only shadow the service's field.
    this._native = { outgoing: [], listening: false, closed: false, onFailure: null }
    await withNarrowedBridge(() => super.init())
    this._onShutdown = () => this.disconnect()
    cds.on('shutdown', this._onShutdown)
    if (this.listenImmediately) this.startListening()
    else cds.once('listening', () => this.startListening())
  }

  /** Maps `cds.requires.<service>` to the native engine's options; implemented per kind. */
  engineOptions() {
    throw new NativeMessagingError(codes.INTERNAL, `${this.constructor.name} does not implement engineOptions()`)
  }

  /** Whether consumption starts at `init` rather than at `cds.once('listening')`. */
  get listenImmediately() {
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
   * With `format: 'cloudevents'`: fills the missing CloudEvents attributes (in native code) and
   * rejects headers that do not form a valid CloudEvents 1.0 event. Headers the app set are kept.
   */
  prepareHeaders(headers, event) {
    if (this.options.format !== 'cloudevents') return
    const source = this.bindingNamespace ? `/${this.bindingNamespace.replace(/^\//, '')}` : `/default/sap.cap/${process.pid}`
    let completed
    try {
      completed = native().completeCloudEventHeaders(JSON.stringify(headers), event, source)
    } catch (e) {
      throw fromNative(e)
    }
    Object.assign(headers, JSON.parse(completed))
  }

  on(event, ...rest) {
    const res = super.on(event, ...rest)
    if (this._native?.listening) this._subscribe()
    return res
  }

  async handle(msg) {
    if (msg.inbound) return super.handle(msg)
    const _msg = this.message4(msg)
    if (this.options.structured && typeof _msg.data === 'string') _msg.data = { message: _msg.data }
    const payload = this.serialize(_msg)
    if (this.listenImmediately && this._native.started) await this._native.started
    return new Promise((resolve, reject) => {
      const state = this._native
      if (state.outgoing.push({ topic: _msg.event, payload, resolve, reject }) === 1) queueMicrotask(() => this._flush())
    })
  }

  /** Sends every emit of this tick to the engine in one call. */
  _flush() {
    const state = this._native
    const batch = state.outgoing
    state.outgoing = []
    const topics = new Array(batch.length)
    const payloads = new Array(batch.length)
    for (let i = 0; i < batch.length; i++) {
      topics[i] = batch[i].topic
      payloads[i] = batch[i].payload
    }
    this._engine.publish(topics, payloads).then(
      results => {
        for (let i = 0; i < batch.length; i++) {
          const r = results[i]
          if (r == null) batch[i].resolve()
          else batch[i].reject(fromCoded(r))
        }
      },
      err => {
        const e = fromNative(err)
        for (const m of batch) m.reject(e)
      }
    )
  }

  /** Starts consuming the subscribed topics. Called at `cds.once('listening')`; call it yourself in a script without a server. */
  async startListening() {
    const state = this._native
    if (state.listening || state.closed) return
    state.listening = true
    this._subscribe()
    const g = this._engine.guarantee()
    this.LOG._info && this.LOG.info(`${this.name}: ${g.summary}`)
    const started = this._engine.listen(batch => this._deliver(batch))
    // Emits wait for this where consumption starts at init (local kind): an emit made right after
    // connect must not find the consumer not yet started and count as "no receivers".
    state.started = started.then(
      () => {},
      () => {}
    )
    try {
      await started
    } catch (e) {
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
  _deliver({ topics, payloads, attempts }) {
    const n = topics.length
    const all = new Array(n)
    for (let i = 0; i < n; i++) all[i] = this._process(topics[i], payloads[i], attempts[i])
    return Promise.all(all)
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
      await this.processInboundMsg({}, msg)
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
        decision = await hook(err, msg, { attempt, maxAttempts: this._maxAttempts })
      } catch (e) {
        this.LOG.error(`${this.name}: the onFailure hook threw for a message on topic '${msg.event}':`, e)
      }
    }
    if (decision === 'ack') return null
    return {
      message: String(err.message ?? err),
      code: err.code == null ? undefined : String(err.code),
      unrecoverable: decision === 'dead-letter' || (decision !== 'retry' && (unparsable || !!err.unrecoverable || err.code === 'NO_HANDLER_FOUND'))
    }
  }

  /** Dead letters kept in memory by the engine (local kind), oldest first. */
  deadLetters() {
    return this._engine ? this._engine.deadLetters() : []
  }

  /** Stops consuming and releases every native resource; idempotent. */
  async disconnect() {
    if (!this._native || this._native.closed) return
    this._native.closed = true
    if (this._onShutdown) cds.off?.('shutdown', this._onShutdown)
    try {
      await this._engine?.close()
    } catch (e) {
      throw fromNative(e)
    }
  }
}

function mapCommon(o = {}) {
  const out = {}
  for (const k of COMMON_OPTIONS) {
    const v = number(k, o[k])
    if (v !== undefined) out[k] = v
  }
  return out
}

/** Accepts numbers and numeric strings (values from environment variables); anything else is INVALID_CONFIG. */
function number(name, v) {
  if (v === undefined || v === null) return undefined
  if (typeof v === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(v)) v = Number(v)
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || !Number.isInteger(v))
    throw new NativeMessagingError(codes.INVALID_CONFIG, `${name} must be a non-negative whole number, got ${JSON.stringify(v)}`)
  return v
}

function bool(name, v) {
  if (v === undefined || v === null) return undefined
  if (v === 'true' || v === 'false') return v === 'true'
  if (typeof v !== 'boolean') throw new NativeMessagingError(codes.INVALID_CONFIG, `${name} must be true or false, got ${JSON.stringify(v)}`)
  return v
}

module.exports = NativeMessagingService
module.exports.number = number
module.exports.bool = bool
