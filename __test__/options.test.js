'use strict'
// Options as a CAP plugin takes them (issue #12): keys that cds lowercased (environment variables),
// a misspelt key, warnings of the option mapping in cds.log, and the default box as @sap/cds finds it.
const os = require('node:os')
const path = require('node:path')
// As a deployment sets it: cds turns CDS_REQUIRES_MESSAGING_MAXATTEMPTS into `maxattempts`.
process.env.CDS_REQUIRES_MESSAGING_MAXATTEMPTS = '7'
process.env.CDS_CONFIG = JSON.stringify({
  requires: { messaging: { kind: 'native-local-messaging', retryDelay: 1, maxRetryDelay: 5, maxAttemps: 5 } }
})
const cds = require('@sap/cds')

describe('options like a CAP plugin', () => {
  const log = cds.test.log() // before cds.test: the app's services are connected while it boots
  cds.test(path.join(__dirname, 'apps', 'reviews'))
  let messaging
  let bootLog // cds.test.log() clears its output after each test
  beforeAll(async () => {
    messaging = await cds.connect.to('messaging')
    bootLog = log.output
  })

  test('a key lowercased by cds (CDS_REQUIRES_MESSAGING_MAXATTEMPTS=7) takes effect', async () => {
    expect(cds.env.requires.messaging.maxattempts).toBe(7) // what cds hands over
    let calls = 0
    messaging.on(`fails-${process.pid}`, () => {
      calls++
      throw new Error('always')
    })
    await expect(messaging.emit(`fails-${process.pid}`, {})).rejects.toThrow(/always/)
    expect(calls).toBe(7)
  })

  test('a misspelt key gets one warning that names the nearest known key, in cds.log', () => {
    const lines = bootLog.split('\n').filter(l => l.includes('maxAttemps'))
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/messaging: option 'maxAttemps' is not known and is ignored; did you mean maxAttempts\?/)
  })

  test('Redis without credentials: the documented warning reaches cds.log', async () => {
    const name = `redis-nocreds-${process.pid}`
    const srv = await cds.connect.to(name, { kind: 'native-redis-messaging' })
    try {
      expect(log.output).toContain(`${name}: No Redis credentials found, using redis://127.0.0.1:6379`)
    } finally {
      await srv.disconnect()
    }
  })

  test("the default box is @sap/cds's default box, also with $HOME set elsewhere", async () => {
    const home = process.env.HOME
    process.env.HOME = path.join(os.tmpdir(), `not-the-home-${process.pid}`)
    try {
      const ours = await cds.connect.to(`box-${process.pid}`, { kind: 'native-file-based-messaging' })
      const theirs = await cds.connect.to(`cds-box-${process.pid}`, { kind: 'file-based-messaging' })
      try {
        expect(ours.engineOptions(ours.options).file.path).toBe(theirs.file)
        expect(theirs.file).toBe(path.join(os.userInfo().homedir, '.cds-msg-box'))
      } finally {
        await ours.disconnect()
      }
    } finally {
      process.env.HOME = home
    }
  })
})
