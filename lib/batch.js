'use strict'
// Opt-in batched inbound processing (`srv.onBatch`) and bulk emit (`srv.emitMany`), issue #16.
//
// Inbound: the engine hands JavaScript up to `maxBatch` deliveries per call. Of those, the first
// deliveries (attempt 1) of an event whose handlers all come from `onBatch` form one group: its
// handlers get the array of messages and run in one CAP transaction (`srv.tx`), committed only
// when they all succeeded. When the group fails (a handler throws, the transaction cannot commit),
// it is rolled back and each message goes through the ordinary path one by one, in delivery order —
// `processInboundMsg`, its own transaction, the batch handler called with `[msg]` — so only a
// message that fails alone is redelivered (then processed alone again) or dead-lettered. Every
// message is acknowledged only after its own successful processing, as before.
//
// Bulk emit: every message goes through the service's outbound path (`message4`, serialise) in one
// tick, so the engine gets them in one publish call; the result is `Promise.allSettled`'s. With
// CAP's outbox (`outboxed: true`) each goes through `emit`, i.e. into the outbox.
const { cds } = require('./cds')
const { guardHandler } = require('./handler-errors')
const { NativeMessagingError, codes } = require('./errors')
const { runHandlers } = require('./nested')
const trace = require('./trace')
const { withTimeout } = require('./deliver')

/** Marks the per-message handler registered by `onBatch`; its value is the guarded batch handler. */
const BATCH = Symbol('cds-native-messaging.batch')

/** What a batch call that did not settle within `handlerTimeout` resolves to. */
const TIMED_OUT = Symbol('timed out')

/** Marks the outbound messages of one `emitMany` call (they may share one publish call). */
const BULK = Symbol('cds-native-messaging.bulk')

/**
 * The per-message handler that `onBatch(event, handler)` registers with `on`: it calls `handler`
 * with a one-element array (the path of a message that is not batched: a redelivery, a batch of
 * one, a retry after its batch failed, the local kind's `emit` awaited alone, the inbox).
 */
function onBatchHandlers(event, handler) {
  if (typeof handler !== 'function') throw new NativeMessagingError(codes.INVALID_CONFIG, `onBatch('${event}', handler) needs a function`)
  const batch = guardHandler(event, handler)
  // (an AsyncFunction: @sap/cds 10 stores it as it is, where it wraps any other function and the
  // mark would be lost)
  const single = async function (msg) {
    return batch.call(this, [msg])
  }
  Object.defineProperty(single, BATCH, { value: batch })
  Object.defineProperty(single, 'name', { value: handler.name })
  return single
}

const PHASES = ['_initial', 'before', 'on', 'after']

/**
 * The batch handlers of `event` when every handler that would see an inbound message of `event`
 * (any phase, also `'*'`) comes from `onBatch`, else `undefined` (the messages then go one by one).
 */
function batchableHandlers(srv, event) {
  const registered = srv.handlers ?? srv._handlers
  if (!registered) return undefined
  const req = { event }
  const batch = []
  for (const phase of PHASES) {
    for (const h of registered[phase] ?? []) {
      if (typeof h.for === 'function' ? !h.for(req) : h[phase] !== event && h[phase] !== '*') continue
      const b = phase === 'on' && h.handler?.[BATCH]
      if (!b) return undefined
      batch.push(b)
    }
  }
  return batch.length ? batch : undefined
}

/**
 * Processes `items` (`{ topic, payload, attempt }` of one event) as one batch; resolves to one
 * outcome per item (`null` = acknowledge, else the failure), never rejects. `settle(k, outcome)`
 * reports an outcome as soon as it is known. With `handlerTimeout` (ms): a batch call that has not
 * settled in time fails every message (redelivered; the call keeps running, so it is not retried
 * one by one now), and each one-by-one retry has the timeout of an ordinary message.
 */
async function processGroup(srv, event, handlers, items, settle = () => {}, handlerTimeout = 0) {
  const outcomes = new Array(items.length).fill(null)
  const msgs = []
  const at = []
  for (let k = 0; k < items.length; k++) {
    const { topic, payload } = items[k]
    let msg
    try {
      msg = srv.deserialize(topic, JSON.parse(payload))
    } catch {
      // (the ordinary path reports it: INVALID_DATA_FORMAT, the error hook, dead letter)
      outcomes[k] = undefined
      continue
    }
    msg.event = event
    msg.inbound = true
    msgs.push(msg)
    at.push(k)
  }
  if (msgs.length) {
    const batch = runHandlers(srv, () => trace.inbound(srv, { event, headers: {} }, () => runBatch(srv, handlers, msgs))).then(
      () => null,
      e => e ?? new Error('a batch handler rejected without an error')
    )
    let timer
    const timeout =
      handlerTimeout > 0 &&
      new Promise(resolve => {
        timer = setTimeout(() => resolve(TIMED_OUT), handlerTimeout)
        timer.unref?.()
      })
    const failed = await (timeout ? Promise.race([batch, timeout]).finally(() => clearTimeout(timer)) : batch)
    if (failed === TIMED_OUT) {
      const outcome = { message: `the batch handlers of ${msgs.length} messages on '${event}' did not settle within handlerTimeout (${handlerTimeout} ms)`, code: 'HANDLER_TIMEOUT' }
      for (const k of at) outcomes[k] = outcome
    } else if (failed) {
      const LOG = srv.LOG
      if (LOG?._info) LOG.info(`${srv.name}: a batch of ${msgs.length} messages on '${event}' failed (${failed?.message ?? failed}); retrying them one by one`)
      for (const k of at) outcomes[k] = undefined
    }
    for (const k of at) if (outcomes[k] !== undefined) settle(k, outcomes[k])
  }
  // one by one, in delivery order: the unparsable ones and those of a failed batch
  for (let k = 0; k < items.length; k++) {
    if (outcomes[k] !== undefined) continue
    const { topic, payload, attempt } = items[k]
    const p = srv._process(topic, payload, attempt)
    outcomes[k] = await (handlerTimeout > 0 ? withTimeout(p, handlerTimeout, topic) : p)
    settle(k, outcomes[k])
  }
  return outcomes
}

/** Runs the batch handlers on `msgs` in one transaction of `srv`, as `processInboundMsg` does for one message. */
async function runBatch(srv, handlers, msgs) {
  if (!cds.context) cds.context = {}
  if (cds.model) cds.context.model = cds.model
  const ctx = { user: cds.User.privileged }
  return srv.tx(ctx, tx => (handlers.length === 1 ? handlers[0].call(tx, msgs) : Promise.all(handlers.map(h => h.call(tx, msgs)))))
}

/** `srv.emitMany(messages)`: one `Promise.allSettled` entry per message. */
function emitMany(srv, messages) {
  if (!Array.isArray(messages)) {
    return Promise.reject(new NativeMessagingError(codes.INVALID_CONFIG, 'emitMany(messages) needs an array of { event, data, headers } objects'))
  }
  // With CAP's outbox each message goes into it (in the current transaction), as `emit` does.
  const outboxed = typeof cds.unqueued === 'function' && cds.unqueued(srv) !== srv
  const pending = new Array(messages.length)
  const bulk = {}
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]
    if (!m || typeof m !== 'object' || typeof m.event !== 'string' || !m.event) {
      pending[i] = Promise.reject(new NativeMessagingError(codes.INVALID_CONFIG, `emitMany: message ${i} is not an object with an 'event' name`))
      continue
    }
    try {
      const eve = new cds.Event({ event: m.event, data: m.data, headers: m.headers })
      // (through the kind's `handle`, which may add to a failure — AMQP marks `unrecoverable`)
      if (!outboxed) Object.defineProperty(eve, BULK, { value: bulk })
      pending[i] = outboxed ? srv.emit(eve) : srv.handle(eve)
    } catch (e) {
      pending[i] = Promise.reject(e)
    }
  }
  return Promise.allSettled(pending)
}

module.exports = { BATCH, BULK, onBatchHandlers, batchableHandlers, processGroup, emitMany }
