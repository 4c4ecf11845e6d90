'use strict'
const NativeMessagingService = require('./NativeMessagingService')

/**
 * `native-local-messaging`: an in-process queue with a broker's semantics (ack, redelivery up to
 * `maxAttempts`, dead letters). `emit` resolves once the receivers processed the message and rejects
 * with the handler's error when it was not retried successfully.
 */
class NativeLocalMessaging extends NativeMessagingService {
  engineOptions() {
    return { transport: 'local' }
  }

  get listenImmediately() {
    return true
  }

  /** The first attempt of an emit is delivered in-process; the engine takes over what failed. */
  get deliversInProcess() {
    return true
  }

  get consumesAll() {
    return !!this._listenToAll.value
  }

  /** Topics are not prefixed in-process, as with @sap/cds local-messaging. */
  prepareTopic(topic) {
    return topic
  }
}

module.exports = NativeLocalMessaging
