'use strict'
// Hands one batch from the engine to a service's `_process`, message by message.
//
// - Early outcomes: a message whose handlers finished is reported to the engine
//   (`engine.settle(batchId, indices, failures)`) without waiting for the rest of its batch, so one
//   handler that never settles does not keep the others unacknowledged (issue #14, defect 5).
//   Reports of one tick go in one call; when the whole batch finished in that tick nothing extra
//   is sent — the batch's result carries it.
// - `handlerTimeout` (ms, default: none): a message whose handlers have not settled by then
//   counts as failed (redelivered by the policy, or dead-lettered after `maxAttempts`). The
//   handlers keep running; a redelivery may overlap them.

/** The outcome of a message whose handlers did not settle within `ms`. */
function timedOut(ms, topic) {
  return { message: `the handlers of a message on topic '${topic}' did not settle within handlerTimeout (${ms} ms)`, code: 'HANDLER_TIMEOUT' }
}

/**
 * Processes `{ topics, payloads, attempts, id }` with `process(topic, payload, attempt)` (resolving
 * to `null` or a failure) and resolves to one outcome per message. `groups` (optional, from
 * `srv.onBatch`): `{ indices, run }` each, where `run(settle, handlerTimeout)` resolves to the
 * outcomes of the messages at `indices` (in that order) and may report one earlier with
 * `settle(k, outcome)`; those messages are not passed to `process`, and `run` applies
 * `handlerTimeout` itself.
 */
function deliverBatch(engine, { topics, payloads, attempts, id }, process, handlerTimeout, groups) {
  const n = topics.length
  let finished = 0
  let indices = []
  let failures = []
  const flush = () => {
    // Everything finished in this tick: the batch result that follows carries it.
    if (finished < n) engine.settle(id, indices, failures)
    indices = []
    failures = []
  }
  const report = (i, outcome) => {
    finished++
    if (id == null || typeof engine.settle !== 'function') return
    if (indices.push(i) === 1) queueMicrotask(flush)
    failures.push(outcome)
  }
  const all = new Array(n)
  if (groups) {
    for (const { indices, run } of groups) {
      // a message of a group settles as soon as its outcome is known (`settle(k, outcome)`), or
      // with the group's result (resolving twice keeps the first)
      const resolvers = new Array(indices.length)
      for (let k = 0; k < indices.length; k++) {
        const i = indices[k]
        all[i] = new Promise(resolve => (resolvers[k] = resolve)).then(outcome => {
          report(i, outcome)
          return outcome
        })
      }
      const settle = (k, outcome) => resolvers[k](outcome)
      run(settle, handlerTimeout).then(
        outcomes => outcomes.forEach((o, k) => settle(k, o)),
        e => resolvers.forEach(r => r({ message: `batch processing failed: ${e?.message ?? e}`, code: 'HANDLER_FAILED' }))
      )
    }
  }
  for (let i = 0; i < n; i++) {
    if (all[i]) continue
    let p = process(topics[i], payloads[i], attempts[i])
    if (handlerTimeout > 0) p = withTimeout(p, handlerTimeout, topics[i])
    all[i] = p.then(outcome => {
      report(i, outcome)
      return outcome
    })
  }
  return Promise.all(all)
}

/** `p`, or the outcome of a message whose handlers did not settle within `ms` (`handlerTimeout`). */
function withTimeout(p, ms, topic) {
  let timer
  const timeout = new Promise(resolve => {
    timer = setTimeout(() => resolve(timedOut(ms, topic)), ms)
    timer.unref?.()
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

module.exports = { deliverBatch, withTimeout }
