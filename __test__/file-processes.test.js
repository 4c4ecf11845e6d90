'use strict'
// The file box across real processes: our kind against itself and against @sap/cds's own
// file-based-messaging on the same box file.
const fs = require('node:fs')
const path = require('node:path')
const { tmpDir, peer } = require('./helpers')

const ours = file => ({ kind: 'native-file-based-messaging', file, interval: 200 })
const theirs = file => ({ kind: 'file-based-messaging', file, outboxed: false })
const range = (from, n) => Array.from({ length: n }, (_, k) => from + k)
const messageLines = file => fs.readFileSync(file, 'utf8').split('\n').filter(l => /^\s*\S+ \{/.test(l))

describe('file box across processes', () => {
  test('emitter exits before the receiver starts: the receiver gets everything once', async () => {
    const box = path.join(tmpDir('exit-first'), 'box')
    const sent = await peer('emit', ours(box), { n: 300 })
    expect(sent.emitted).toBe(300)
    expect(messageLines(box)).toHaveLength(300) // on disk when the emitter left
    const got = await peer('receive', ours(box), { n: 300 })
    expect(got.dup).toBe(0)
    expect(got.ids).toEqual(range(0, 300))
    expect(messageLines(box)).toHaveLength(0)
  })

  test('two emitters and one receiver, 1,000 messages: none lost, none twice', async () => {
    const box = path.join(tmpDir('two-emitters'), 'box')
    const receiver = peer('receive', ours(box), { n: 1000, idleMs: 3000 })
    const [a, b] = await Promise.all([
      peer('emit', ours(box), { n: 500, from: 0, sequential: true }),
      peer('emit', ours(box), { n: 500, from: 500 })
    ])
    expect(a.emitted + b.emitted).toBe(1000)
    const got = await receiver
    expect(got.dup).toBe(0)
    expect(got.received).toBe(1000)
    expect(got.ids).toEqual(range(0, 1000))
    expect(messageLines(box)).toHaveLength(0)
  })

  test('two receivers of ours on one box share the work without duplicates', async () => {
    const box = path.join(tmpDir('two-receivers'), 'box')
    await peer('emit', ours(box), { n: 400 })
    const [r1, r2] = await Promise.all([
      peer('receive', ours(box), { n: 400, idleMs: 1500 }),
      peer('receive', ours(box), { n: 400, idleMs: 1500 })
    ])
    const all = [...r1.ids, ...r2.ids].sort((x, y) => x - y)
    expect(all).toEqual(range(0, 400))
    expect(r1.dup + r2.dup).toBe(0)
  })

  test('interop: our emitter, @sap/cds file-based-messaging receiver', async () => {
    const box = path.join(tmpDir('ours-to-theirs'), 'box')
    await peer('emit', ours(box), { n: 50 })
    const got = await peer('receive', theirs(box), { n: 50, idleMs: 2000 })
    expect(got.ids).toEqual(range(0, 50))
    expect(got.dup).toBe(0)
  })

  test('interop: @sap/cds file-based-messaging emitter, our receiver', async () => {
    const box = path.join(tmpDir('theirs-to-ours'), 'box')
    // @sap/cds's emitter waits 150 ms per emit for its own lock; keep the count small.
    const sent = await peer('emit', theirs(box), { n: 15, sequential: true, exit: false })
    expect(sent.emitted).toBe(15)
    const got = await peer('receive', ours(box), { n: 15 })
    expect(got.ids).toEqual(range(0, 15))
    expect(got.dup).toBe(0)
  })

  test('interop: both kinds emit into one box while ours receives', async () => {
    const box = path.join(tmpDir('mixed'), 'box')
    const receiver = peer('receive', ours(box), { n: 110, idleMs: 3000 })
    await Promise.all([
      peer('emit', ours(box), { n: 100, from: 0 }),
      peer('emit', theirs(box), { n: 10, from: 100, sequential: true, exit: false })
    ])
    const got = await receiver
    expect(got.ids).toEqual(range(0, 110))
    expect(got.dup).toBe(0)
  })
})
