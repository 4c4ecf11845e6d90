'use strict'
// The local kind's fast path (issue #16): the first attempt of a local emit is delivered here, on
// the emitter's thread, without a round trip through the native engine. Only a message whose first
// attempt failed goes to the engine (`engine.redeliver`), which owns everything after that: the
// back-off and redelivery up to `maxAttempts`, the dead letter, the log lines and the emit's
// rejection — the same broker semantics as a message the engine delivered itself.
//
// - The handlers run in the async context the engine's handler calls run in (the one
//   `startListening` ran in), not in the emitter's: `processInboundMsg` sets `cds.context` and
//   must not change the emitter's.
// - The wire body is parsed again (`JSON.parse` of what `serialize` produced), so a receiver never
//   shares objects with the emitter, as with a broker.
// - `handlerTimeout` counts as with the engine's deliveries.
// - Counters (`stats()`: delivered, acked) of the messages delivered here are reported to the
//   engine once per tick.
// - Not used (the engine delivers) before the consumer has started, for topics nobody subscribed,
//   with `format: 'cloudevents'` (the engine validates those payloads), and for events whose
//   handlers come from `onBatch` (the engine's batches are what they are for).
const { AsyncLocalStorage } = require('node:async_hooks')
const { withTimeout } = require('./deliver')
const { fromFailure } = require('./errors')
const { batchableHandlers } = require('./batch')

/** Captures the current async context: the handlers of messages delivered here run in it. */
function captureContext() {
  return typeof AsyncLocalStorage.snapshot === "function" ? AsyncLocalStorage.snapshot() : fn => fn()
}

/** Whether `srv`'s emit of `topic` is delivered here. */
function deliversHere(srv, topic) {
  const state = srv._native
  if (!state.inProcess || state.closed || srv.options.format === 'cloudevents') return false
  if (!(srv.consumesAll || srv.subscribedTopics.has(topic))) return false
  return !batchableHandlers(srv, topic)
}

/**
 * Delivers `payload` on `topic` to `srv`'s handlers (attempt 1); resolves when they succeeded,
 * or hands the message to the engine and settles as the engine's delivery of it does.
 */
async function deliverHere(srv, topic, payload, nested) {
  const state = srv._native
  count(srv, 'delivered')
  let p = state.inProcess(() => srv._process(topic, payload, 1))
  if (srv._handlerTimeout > 0) p = withTimeout(p, srv._handlerTimeout, topic)
  const failure = await p
  if (failure == null) {
    count(srv, 'acked')
    return
  }
  const [r] = await srv._engine.redeliver([topic], [payload], [failure], nested)
  if (r != null) throw fromFailure(r)
}

function count(srv, what) {
  const c = srv._native.counted
  if (c.delivered + c.acked === 0) {
    queueMicrotask(() => {
      const { delivered, acked } = c
      c.delivered = c.acked = 0
      srv._engine.counted(delivered, acked)
    })
  }
  c[what]++
}

module.exports = { captureContext, deliversHere, deliverHere }
