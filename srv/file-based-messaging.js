'use strict'
const os = require('node:os')
const path = require('node:path')
const NativeMessagingService = require('./NativeMessagingService')
const { number, bool } = NativeMessagingService
const { NativeMessagingError, codes } = require('../lib/errors')

/**
 * `native-file-based-messaging`: a box file shared by the processes of one machine, byte-compatible
 * with @sap/cds `file-based-messaging` (both can share one box).
 */
class NativeFileBasedMessaging extends NativeMessagingService {
  engineOptions(o) {
    const file = o.file ?? o.credentials?.file ?? '~/.cds-msg-box'
    if (typeof file !== 'string' || !file.trim())
      throw new NativeMessagingError(codes.INVALID_CONFIG, `file must be the path of the box file, got ${JSON.stringify(file)}`)
    return {
      transport: 'file',
      file: resolve(file),
      deadLetterFile: o.deadLetterFile == null ? undefined : resolve(String(o.deadLetterFile)),
      malformedFile: o.malformedFile == null ? undefined : resolve(String(o.malformedFile)),
      interval: number('interval', o.interval),
      watch: bool('watch', o.watch),
      lockTimeout: number('lockTimeout', o.lockTimeout),
      staleLockAfter: number('staleLockAfter', o.staleLockAfter),
      fsync: bool('fsync', o.fsync)
    }
  }
}

const resolve = f => path.resolve(f.replace(/^~(?=$|\/)/, () => os.homedir()))

module.exports = NativeFileBasedMessaging
