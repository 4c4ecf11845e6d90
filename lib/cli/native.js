'use strict'
// The native operations as the CLI calls them. Errors cross as data (src/napi/error.rs): a
// synchronous function throws with `err.code` set; an asynchronous one resolves to its value or to
// a `Failure { code, message }`, which `settled` throws as a NativeMessagingError.
const { native } = require('../native')
const { settled, fromNative } = require('../errors')

/** The effective stream prefix, group and dead-letter stream of a Redis streams service. */
function streamNames(redisOptions) {
  try {
    return native().redisStreamNames(redisOptions)
  } catch (e) {
    throw fromNative(e)
  }
}

module.exports = { native, settled, streamNames }
