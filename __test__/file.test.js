'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { tmpDir, until } = require('./helpers')

const dir = tmpDir('file-kind')
const box = path.join(dir, 'box')
process.env.CDS_CONFIG = JSON.stringify({
  requires: { messaging: { kind: 'native-file-based-messaging', file: box, maxAttempts: 3, retryDelay: 20, forceListening: true } }
})
const cds = require('@sap/cds')
const { sharedTests } = require('./suite')

describe('native-file-based-messaging', () => {
  const t = cds.test(path.join(__dirname, 'apps', 'reviews'))
  const log = cds.test.log()
  const ctx = { kind: 'native-file-based-messaging', extra: { file: path.join(dir, 'other-box') }, POST: (...a) => t.POST(...a) }
  beforeAll(async () => {
    ctx.messaging = await cds.connect.to('messaging')
  })

  test('is our kind, and the box was created as "\\n"', () => {
    expect(ctx.messaging.constructor.name).toBe('NativeFileBasedMessaging')
    expect(fs.existsSync(box)).toBe(true)
  })

  sharedTests(ctx)

  test('emit writes the @sap/cds line format and resolves once the line is on disk', async () => {
    // no subscriber for this topic: the line stays in the box
    await ctx.messaging.emit('nobody.listens', { x: 1 }, { h: 'v' })
    const content = fs.readFileSync(box, 'utf8')
    expect(content).toContain('\nnobody.listens {"data":{"x":1},"headers":{"h":"v"}}')
  })

  test('handler always throws: the message goes to the dead-letter box after maxAttempts, with a log line', async () => {
    let calls = 0
    ctx.messaging.on('poison', () => {
      calls++
      throw new Error('cannot process')
    })
    await ctx.messaging.emit('poison', { id: 42 })
    const dead = `${box}.dead`
    await until(() => fs.existsSync(dead) && fs.readFileSync(dead, 'utf8').includes('poison {'), 10000, 'the dead letter')
    expect(calls).toBe(3)
    expect(fs.readFileSync(dead, 'utf8')).toContain('\npoison {"data":{"id":42}')
    // the dead letter is written before the box is rewritten (a crash in between duplicates, never loses)
    await until(() => !/poison/.test(fs.readFileSync(box, 'utf8')), 5000, 'the box without the message')
    await until(() => /message on topic 'poison' failed 3 time\(s\)/.test(log.output), 5000, 'the log line')
  })

  test('a malformed line is moved aside with a warning, and the messages around it are delivered', async () => {
    const seen = []
    ctx.messaging.on('around', msg => seen.push(msg.data.n))
    fs.appendFileSync(box, '\nthis-line-has-no-json\naround {"data":{"n":1},"headers":{}}\naround {"data":{"n":2},"headers":{}')
    await ctx.messaging.emit('around', { n: 3 })
    await until(() => seen.length === 2, 10000, 'the valid messages')
    expect(seen.sort()).toEqual([1, 3])
    const malformed = fs.readFileSync(`${box}.malformed`, 'utf8')
    expect(malformed).toContain('this-line-has-no-json')
    expect(malformed).toContain('around {"data":{"n":2},"headers":{}')
    expect(fs.readFileSync(box, 'utf8')).not.toContain('this-line-has-no-json')
    await until(() => /moved a malformed line/.test(log.output) && /invalid JSON/.test(log.output), 5000, 'the warnings')
  })

  test("on('*') with forceListening consumes every topic", async () => {
    const seen = []
    ctx.messaging.on('*', msg => seen.push(msg.event))
    fs.appendFileSync(box, '\nsomething.unsubscribed {"data":{},"headers":{}}')
    await until(() => seen.includes('something.unsubscribed'), 10000, 'the wildcard delivery')
  })

  test('invalid file option fails with INVALID_CONFIG', async () => {
    const err = await cds.connect.to({ kind: 'native-file-based-messaging', file: dir }).catch(e => e)
    expect(err.code).toBe('INVALID_CONFIG')
    expect(err.message).toMatch(/is a directory/)
    const err2 = await cds.connect.to({ kind: 'native-file-based-messaging', file: path.join(dir, 'x'), interval: 'soon' }).catch(e => e)
    expect(err2.code).toBe('INVALID_CONFIG')
  })
})
