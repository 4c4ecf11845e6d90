'use strict'
// The dispatcher under odd handlers (issue #14, defect 5): one handler that never settles must not
// stall its batch; `handlerTimeout` fails such a message so it is redelivered.
const fs = require('node:fs')
const path = require('node:path')
const cds = require('@sap/cds')
const { tmpDir, until } = require('./helpers')

const lines = (file, re) => fs.readFileSync(file, 'utf8').split('\n').filter(l => re.test(l))

async function box(name, extra = {}) {
  const file = path.join(tmpDir(name), 'box')
  const m = await cds.connect.to(`${name}-${process.pid}`, { kind: 'native-file-based-messaging', file, interval: 100, retryDelay: 20, ...extra })
  return { m, file }
}

describe('one handler that never settles (defect 5)', () => {
  test('the other messages of its batch are acknowledged, and later ones are delivered', async () => {
    const { m, file } = await box('hang')
    // A backlog: the first batch holds all 100 permits.
    fs.appendFileSync(file, Array.from({ length: 200 }, (_, i) => `\nhang {"data":{"i":${i}},"headers":{}}`).join(''))
    const seen = new Set()
    m.on('hang', msg => {
      if (msg.data.i === 0) return new Promise(() => {}) // never settles
      seen.add(msg.data.i)
    })
    await m.startListening()
    await until(() => seen.size === 199, 20000, 'the 199 other messages')
    // Everything but the hanging one is acknowledged (removed from the box).
    await until(() => lines(file, /^[^~\s]\S* \{/).length === 0 && lines(file, /^~claim\//).length === 1, 10000, 'the acknowledgements')
    await m.emit('hang', { i: 1000 })
    await until(() => seen.has(1000), 10000, 'a message emitted afterwards')
    await m.disconnect() // gives the hanging handler's claim back after the drain timeout
  }, 40000)

  test('with handlerTimeout the message counts as failed and is redelivered', async () => {
    const { m, file } = await box('hang-timeout', { handlerTimeout: 300 })
    const attempts = []
    m.on('slow', msg => {
      attempts.push(msg.data.n)
      if (attempts.length === 1) return new Promise(() => {}) // the first delivery hangs
    })
    await m.startListening()
    await m.emit('slow', { n: 1 })
    await until(() => attempts.length === 2, 10000, 'the redelivery after the timeout')
    await until(() => lines(file, /slow/).length === 0, 10000, 'the acknowledgement')
    await m.disconnect()
  }, 20000)

  test('a handler that always hangs is dead-lettered after maxAttempts with handlerTimeout', async () => {
    const { m, file } = await box('hang-dead', { handlerTimeout: 100, maxAttempts: 2 })
    let calls = 0
    m.on('stuck', () => {
      calls++
      return new Promise(() => {})
    })
    await m.startListening()
    await m.emit('stuck', {})
    await until(() => fs.existsSync(`${file}.dead`) && lines(`${file}.dead`, /^stuck /).length === 1, 10000, 'the dead letter')
    expect(calls).toBe(2)
    await m.disconnect()
  }, 20000)

  test('handlerTimeout must be a whole number', async () => {
    const err = await box('hang-bad', { handlerTimeout: 'soon' }).catch(e => e)
    expect(err.code).toBe('INVALID_CONFIG')
  })
})
