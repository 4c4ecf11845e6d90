'use strict'
const NativeMessagingService = require('./NativeMessagingService')
const { number, bool, str, boxPath } = require('../lib/options')

/**
 * `native-file-based-messaging`: a box file shared by the processes of one machine, byte-compatible
 * with @sap/cds `file-based-messaging` (both can share one box; `~` resolves as @sap/cds resolves it).
 */
class NativeFileBasedMessaging extends NativeMessagingService {
  static optionKeys = { file: true, deadLetterFile: true, malformedFile: true, interval: true, watch: true, lockTimeout: true, staleLockAfter: true, fsync: true }

  engineOptions(o) {
    const file = str('file', o.file ?? o.credentials?.file ?? '~/.cds-msg-box', { nonEmpty: true })
    return {
      transport: 'file',
      file: {
        path: boxPath(file),
        deadLetterFile: o.deadLetterFile == null ? undefined : boxPath(String(o.deadLetterFile)),
        malformedFile: o.malformedFile == null ? undefined : boxPath(String(o.malformedFile)),
        interval: number('interval', o.interval),
        watch: bool('watch', o.watch),
        lockTimeout: number('lockTimeout', o.lockTimeout),
        staleLockAfter: number('staleLockAfter', o.staleLockAfter),
        fsync: bool('fsync', o.fsync)
      }
    }
  }
}

module.exports = NativeFileBasedMessaging
