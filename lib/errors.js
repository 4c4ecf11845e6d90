'use strict'

/**
 * Stable error codes of cds-native-messaging. Every error this package raises or rejects with is a
 * {@link NativeMessagingError} whose `code` is one of these.
 */
const codes = Object.freeze({
  INVALID_CONFIG: 'INVALID_CONFIG',
  CONNECTION_FAILED: 'CONNECTION_FAILED',
  NO_ROUTE: 'NO_ROUTE',
  INVALID_DATA_FORMAT: 'INVALID_DATA_FORMAT',
  HANDLER_FAILED: 'HANDLER_FAILED',
  LOCK_TIMEOUT: 'LOCK_TIMEOUT',
  CLOSED: 'CLOSED',
  IO_ERROR: 'IO_ERROR',
  REJECTED: 'REJECTED',
  TOKEN_FAILED: 'TOKEN_FAILED',
  INTERNAL: 'INTERNAL'
})

/** An error of cds-native-messaging, with a stable `code` and, where there was one, its `cause`. */
class NativeMessagingError extends Error {
  constructor(code, message, options) {
    super(message, options)
    this.name = 'NativeMessagingError'
    this.code = code
  }
}

/** The error for a `Failure { code, message, retryAfter?, unrecoverable? }` the native engine resolved to. */
function fromFailure(f, cause) {
  const code = f && f.code in codes ? f.code : codes.INTERNAL
  const err = new NativeMessagingError(code, String(f?.message ?? f), cause ? { cause } : undefined)
  // What CAP's outbox reads: how long the broker asked to wait, and that retrying cannot help.
  if (typeof f?.retryAfter === 'number') err.retryAfter = f.retryAfter
  if (f?.unrecoverable === true) err.unrecoverable = true
  return err
}

/**
 * Wraps an error thrown by the native engine (keeps it as `cause`). Its `code` is set natively;
 * an error of napi itself (e.g. an argument of the wrong type) becomes `INTERNAL`.
 */
function fromNative(err) {
  if (err instanceof NativeMessagingError) return err
  if (err && typeof err.message === 'string') return new NativeMessagingError(err.code in codes ? err.code : codes.INTERNAL, err.message, { cause: err })
  return new NativeMessagingError(codes.INTERNAL, String(err))
}

/** Whether `r` is a `Failure { code, message }` of a native operation. */
function isFailure(r) {
  return r !== null && typeof r === 'object' && !Array.isArray(r) && typeof r.code === 'string' && typeof r.message === 'string'
}

/**
 * Awaits a native operation that resolves to its value or to a `Failure`: resolves to the value,
 * or rejects with a NativeMessagingError (also when the call itself threw).
 */
async function settled(pending) {
  let r
  try {
    r = await pending
  } catch (e) {
    throw fromNative(e)
  }
  if (isFailure(r)) throw fromFailure(r)
  return r
}

module.exports = { NativeMessagingError, codes, fromFailure, fromNative, settled }
