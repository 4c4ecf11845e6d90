'use strict'
// native-composite-messaging over two real children in one CAP app: a file box and a local queue.
const fs = require('node:fs')
const path = require('node:path')
const { tmpDir, until } = require('./helpers')

const box = path.join(tmpDir('composite'), 'box')
process.env.CDS_CONFIG = JSON.stringify({
  requires: {
    messaging: {
      kind: 'native-composite-messaging',
      routes: { 'messaging-box': ['orders/**', '*.created', 'ReviewsService.*'], 'messaging-inproc': ['audit.*', '*.created'] }
    },
    'messaging-box': { kind: 'native-file-based-messaging', file: box },
    'messaging-inproc': { kind: 'native-local-messaging' },
    'messaging-drop': { kind: 'native-composite-messaging', routes: { 'messaging-inproc': ['x.*'] }, unmatched: 'drop' },
    'messaging-fallback': { kind: 'native-composite-messaging', routes: { 'messaging-inproc': ['x.*'] }, unmatched: 'messaging-box' }
  }
})
const cds = require('@sap/cds')

describe('native-composite-messaging', () => {
  const t = cds.test(path.join(__dirname, 'apps', 'reviews'))
  const log = cds.test.log()
  let messaging
  beforeAll(async () => {
    messaging = await cds.connect.to('messaging')
  })

  test('is our kind; the routing table can be inspected', () => {
    expect(messaging.constructor.name).toBe('NativeCompositeMessaging')
    expect(messaging.routes()).toEqual([
      { service: 'messaging-box', patterns: ['orders/**', '*.created', 'ReviewsService.*'] },
      { service: 'messaging-inproc', patterns: ['audit.*', '*.created'] }
    ])
  })

  // [topic, expected recipients] — including the cases where @sap/cds's unanchored, unescaped regexes go wrong
  const table = [
    ['orders/new', ['messaging-box']],
    ['orders/a/b.c', ['messaging-box']],
    ['order.created', ['messaging-box', 'messaging-inproc']],
    ['audit.login', ['messaging-inproc']],
    ['ReviewsService.reviewed', ['messaging-box']],
    ['orderXcreated', null], // @sap/cds: '*.created' matches
    ['a.order.created', null], // '*' does not cross '.'
    ['myorders/new', null], // @sap/cds: 'orders/**' matches anywhere
    ['audit.login.failed', null],
    ['audit', null]
  ]
  test.each(table)('route(%s)', (topic, want) => {
    if (want) expect(messaging.route(topic)).toEqual(want)
    else expect(() => messaging.route(topic)).toThrow(expect.objectContaining({ code: 'NO_ROUTE' }))
  })

  test('emit goes to every matching child; on() registers on every matching child', async () => {
    const seen = []
    messaging.on('order.created', msg => seen.push(msg.data.via))
    await messaging.emit('order.created', { via: 'both' })
    await until(() => seen.length === 2, 10000, 'delivery through both children')
    expect(seen).toEqual(['both', 'both'])
  })

  test('a topic routed to the file box arrives through the box', async () => {
    const seen = []
    messaging.on('orders/new', msg => seen.push(msg.data))
    await messaging.emit('orders/new', { id: 1 })
    expect(fs.readFileSync(box, 'utf8').length).toBeGreaterThan(0)
    await until(() => seen.length === 1, 10000, 'the box delivery')
    expect(seen[0]).toEqual({ id: 1 })
  })

  test('declared events of served services are routed as well', async () => {
    const seen = []
    messaging.on('ReviewsService.reviewed', msg => seen.push(msg.data))
    await t.POST('/odata/v4/reviews/review', { subject: 's', rating: 1 })
    await until(() => seen.length === 1, 10000, 'the declared event').catch(e => {
      throw new Error(`${e.message}; box: ${JSON.stringify(fs.readFileSync(box, 'utf8'))}`)
    })
    // exactly once: a child messaging service named like `messaging-box` must not trigger CAP's
    // declared-event bridge (which would make `messaging` re-emit every message it receives)
    await new Promise(r => setTimeout(r, 300))
    expect(seen).toHaveLength(1)
  })

  test('an unmatched topic fails with NO_ROUTE', async () => {
    const err = await messaging.emit('orderXcreated', {}).catch(e => e)
    expect(err.code).toBe('NO_ROUTE')
    expect(err.message).toMatch(/no route matches topic 'orderXcreated'/)
  })

  test("unmatched: 'drop' drops with a warning; unmatched: '<service>' sends there", async () => {
    const drop = await cds.connect.to('messaging-drop')
    await drop.emit('nothing.here', {})
    await until(() => /dropped a message on topic 'nothing.here'/.test(log.output), 5000, 'the warning')
    // the routing table is logged when a composite starts, one line per route with its guarantee
    expect(log.output).toMatch(/messaging-drop: route \["x\.\*"\] → messaging-inproc: native-local-messaging, at-least-once/)
    const fallback = await cds.connect.to('messaging-fallback')
    expect(fallback.route('nothing.here')).toEqual(['messaging-box'])
  })

  test("on('*') registers on every child", async () => {
    const seen = []
    messaging.on('*', msg => seen.push(msg.event))
    await messaging.emit('audit.logout', {})
    expect(seen).toContain('audit.logout')
  })

  test('bad routes fail with INVALID_CONFIG', async () => {
    for (const routes of [undefined, [], { x: [''] }, { x: [42] }]) {
      const err = await cds.connect.to({ kind: 'native-composite-messaging', routes }).catch(e => e)
      expect(err.code).toBe('INVALID_CONFIG')
    }
  })
})
