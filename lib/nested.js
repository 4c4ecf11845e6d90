'use strict'
// Nested emits of the local kind (issue #14, defect 10): a handler that awaits `srv.emit(…)` holds
// an in-flight permit while its nested message waits to be delivered. With every permit held by
// such handlers (≥ maxInFlight concurrent outer emits) nothing could proceed. Emits made while a
// handler of the same service runs are marked nested and delivered without a permit.
const { AsyncLocalStorage } = require('node:async_hooks')

const running = new AsyncLocalStorage()

/** Runs `fn` (the handlers of one inbound message) as inside `srv`; only kinds that wait for their receivers (local) track it. */
function runHandlers(srv, fn) {
  return srv.listenImmediately ? running.run(srv._native, fn) : fn()
}

/** `true` when called (directly or through awaits) from a handler of `srv` while it runs. */
function isNested(srv) {
  return srv.listenImmediately && running.getStore() === srv._native
}

/** Splits queued emits into `[emits, nested]` groups, non-nested first; one group when none is nested. */
function splitNested(queued) {
  if (!queued.some(m => m.nested)) return [[queued, false]]
  return [
    [queued.filter(m => !m.nested), false],
    [queued.filter(m => m.nested), true]
  ].filter(([group]) => group.length)
}

module.exports = { runHandlers, isNested, splitNested }
