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

const CODED = /^([A-Z][A-Z_]+): ([\s\S]*)$/

/** Turns a `"CODE: message"` string from the native engine into a NativeMessagingError. */
function fromCoded(text, cause) {
  const m = CODED.exec(text)
  if (m && m[1] in codes) return new NativeMessagingError(m[1], m[2], cause ? { cause } : undefined)
  return new NativeMessagingError(codes.INTERNAL, text, cause ? { cause } : undefined)
}

/** Wraps an error thrown by the native engine (keeps it as `cause`). */
function fromNative(err) {
  if (err instanceof NativeMessagingError) return err
  if (err && typeof err.message === 'string') return fromCoded(err.message, err)
  return new NativeMessagingError(codes.INTERNAL, String(err))
}

module.exports = { NativeMessagingError, codes, fromCoded, fromNative }
