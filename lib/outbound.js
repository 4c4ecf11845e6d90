'use strict'
// Outbound helpers of NativeMessagingService:
// - `serializeOrReject`: data that JSON cannot carry (BigInt, circular structures) rejects with
//   INVALID_DATA_FORMAT naming the topic instead of a bare TypeError (issue #14, defect 12).
// - `scheduleSubscribe` / `flushSubscribe`: `on()` after listening started sends the set of
//   subscribed topics once per tick, not once per call (5,000 `on()` calls sent 5,000 growing
//   sets: quadratic). The first `on()` of a tick takes effect at once, later ones of the same tick
//   are sent together at its end; an emit sends a pending set first, so it sees every `on()` before it.
const { NativeMessagingError, codes } = require('./errors')

/** `serialize(msg)`, or an INVALID_DATA_FORMAT error naming `msg.event`. */
function serializeOrReject(serialize, msg) {
  try {
    return serialize(msg)
  } catch (e) {
    throw new NativeMessagingError(
      codes.INVALID_DATA_FORMAT,
      `cannot emit '${msg.event}': its data or headers cannot be serialised as JSON (${e?.message ?? e}); send plain objects without BigInt values or circular references`,
      { cause: e }
    )
  }
}

/** Sends `srv`'s subscriptions now, or — after the first `on()` of this tick — once at its end. */
function scheduleSubscribe(srv) {
  const state = srv._native
  if (state.subscribeWindow) {
    state.subscribePending = true
    return
  }
  srv._subscribe()
  state.subscribeWindow = true
  queueMicrotask(() => {
    state.subscribeWindow = false
    flushSubscribe(srv)
  })
}

/** Sends a pending subscription set now. */
function flushSubscribe(srv) {
  const state = srv._native
  if (!state?.subscribePending) return
  state.subscribePending = false
  srv._subscribe()
}

module.exports = { serializeOrReject, scheduleSubscribe, flushSubscribe }
