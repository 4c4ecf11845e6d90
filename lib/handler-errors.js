'use strict'
// Handler failures that @sap/cds or a naive `String(err)` would lose:
// - @sap/cds's `handle` ignores a falsy rejection (`throw undefined`, `Promise.reject()`,
//   `reject(null)`), so the message counted as processed after one call — no redelivery, no dead
//   letter, no log line. `guardHandler` turns such a rejection into an Error before cds sees it.
// - An error value without a usable text (`Object.create(null)`, a `message` getter that throws)
//   made the failure path throw. `describeFailure` reads every property defensively.

/** The Error that stands for a handler's falsy rejection value. */
function falsyRejection(event, value) {
  const err = new Error(`a handler for '${event}' failed with ${value === '' ? "''" : String(value)} instead of an Error`)
  err.rejectedWith = value
  return err
}

/**
 * Wraps an `on(event, handler)` handler so that a falsy throw or rejection becomes an Error.
 * Synchronous handlers stay synchronous; the value a handler returns is passed through.
 */
function guardHandler(event, handler) {
  if (typeof handler !== 'function') return handler
  const guarded = function (...args) {
    let result
    try {
      result = handler.apply(this, args)
    } catch (e) {
      throw e || falsyRejection(event, e)
    }
    if (result && typeof result.then === 'function')
      return result.then(undefined, e => {
        throw e || falsyRejection(event, e)
      })
    return result
  }
  Object.defineProperty(guarded, 'length', { value: handler.length })
  Object.defineProperty(guarded, 'name', { value: handler.name })
  return guarded
}

/** Runs `f`; its result, or `fallback` when it throws. */
function attempt(f, fallback) {
  try {
    return f()
  } catch {
    return fallback
  }
}

/** A text for any thrown value; never throws. */
function textOf(err) {
  if (err === null || (typeof err !== 'object' && typeof err !== 'function')) return attempt(() => String(err), 'unknown error')
  const message = attempt(() => err.message, undefined)
  if (message != null) {
    const text = attempt(() => String(message), undefined)
    if (text !== undefined) return text
  }
  const text = attempt(() => String(err), undefined)
  if (text !== undefined && text !== '[object Object]') return text
  const json = attempt(() => JSON.stringify(err), undefined)
  if (json !== undefined && json !== '{}') return json
  return 'a handler failed with a value that has no message (not an Error)'
}

/**
 * `{ message, code, unrecoverable }` of a thrown value, read defensively: a property whose getter
 * throws counts as absent.
 */
function describeFailure(err) {
  const isObject = err !== null && (typeof err === 'object' || typeof err === 'function')
  const code = isObject ? attempt(() => err.code, undefined) : undefined
  return {
    message: textOf(err),
    code: code == null ? undefined : attempt(() => String(code), undefined),
    unrecoverable: isObject ? !!attempt(() => err.unrecoverable, false) : false
  }
}

module.exports = { guardHandler, describeFailure, falsyRejection }
