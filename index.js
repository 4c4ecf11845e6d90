'use strict'
// Public entry of cds-native-messaging: the service classes of every kind, the error class and codes.
// The napi-generated loader lives in native/native.js and is loaded lazily by lib/native.js.
const { NativeMessagingError, codes } = require('./lib/errors')

module.exports = {
  NativeMessagingError,
  codes,
  get NativeMessagingService() {
    return require('./srv/NativeMessagingService')
  },
  get NativeLocalMessaging() {
    return require('./srv/local-messaging')
  },
  get NativeFileBasedMessaging() {
    return require('./srv/file-based-messaging')
  },
  get NativeCompositeMessaging() {
    return require('./srv/composite-messaging')
  },
  get NativeRedisMessaging() {
    return require('./srv/redis-messaging')
  },
  get NativeMqttMessaging() {
    return require('./srv/mqtt-messaging')
  },
  get NativeAmqpMessaging() {
    return require('./srv/amqp-messaging')
  },
  get NativeEnterpriseMessagingShared() {
    return require('./srv/enterprise-messaging-shared')
  },
  get NativeEnterpriseMessaging() {
    return require('./srv/enterprise-messaging')
  }
}
