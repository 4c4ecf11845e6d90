'use strict'
// The CLI (doctor, tail, send, dead-letters) against the file box, srv.stats(), and W3C trace
// context across two processes — all with child processes in a small CAP app folder.
const fs = require('node:fs')
const path = require('node:path')
const { tmpDir, until } = require('./helpers')
const { cli, app, cliChild, killAll } = require('./ops-helpers')

const dir = tmpDir('ops-file')
const box = path.join(dir, 'box')
const ns = `ops${process.pid}`
const conf = (extra = {}) => ({ kind: 'native-file-based-messaging', file: box, retryDelay: 20, ...extra })
const got = p => p.lines().filter(l => l.got).map(l => l.got)

afterAll(killAll)

test('doctor: green on a good box, with the delivery contract line', async () => {
  fs.writeFileSync(box, '\n')
  const r = await cli(['doctor'], conf())
  expect(r.stdout).toContain('messaging  (native-file-based-messaging)')
  expect(r.stdout).toContain(`box:                ${box}`)
  expect(r.stdout).toMatch(/contract: +at-least-once/)
  expect(r.stdout).toContain('✔ ok')
  expect(r.code).toBe(0)
  const j = JSON.parse((await cli(['--json', 'doctor'], conf())).stdout)
  expect(j[0]).toMatchObject({ service: 'messaging', configuration: ['CDS_CONFIG'], facts: { box, waiting: 0 } })
})

test('doctor: red with the finding when the box is not writable', async () => {
  const ro = path.join(dir, 'ro-box')
  fs.writeFileSync(ro, '\n')
  fs.chmodSync(ro, 0o444)
  const r = await cli(['doctor'], conf({ file: ro }))
  // root may write anything: then the check cannot fail
  if (process.getuid?.() === 0) return expect(r.code).toBe(0)
  expect(r.code).toBe(1)
  expect(r.stdout).toContain('is not readable and writable')
})

test('send arrives, with its headers', async () => {
  const rx = app('receive', conf(), { topics: [`${ns}.sent`] })
  await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
  const r = await cli(['send', `${ns}.sent`, '{"ID":7}', '-H', 'x-origin=cli', '-H', 'k=v=w'], conf())
  expect(r.stderr).toBe('')
  expect(r.stdout).toContain(`sent 1 message to '${ns}.sent'`)
  await until(() => got(rx).length === 1, 15000, 'delivery')
  expect(got(rx)[0]).toMatchObject({ topic: `${ns}.sent`, data: { ID: 7 }, headers: { 'x-origin': 'cli', k: 'v=w' } })
  await rx.stop()
})

test('tail sees every message while the app still receives every one', async () => {
  const topic = `${ns}.tailed`
  // A handler that takes a while (as real ones do): the tail reads the box between two reads of
  // the app; a message emitted and consumed within one poll interval (~20 ms) can be missed.
  const rx = app('receive', conf(), { topics: [topic], delayMs: 300 })
  await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
  const tail = cliChild(['tail', '--json', `${ns}.*`], conf())
  await until(() => tail.stderr().includes('listening'), 15000, 'tail listening')
  for (let i = 0; i < 3; i++) await cli(['send', topic, JSON.stringify({ i })], conf())
  await until(() => got(rx).length === 3, 20000, 'app received 3')
  await until(() => tail.lines().length === 3, 10000, 'tail saw 3')
  expect(tail.lines().map(l => l.payload.data.i).sort()).toEqual([0, 1, 2])
  expect(tail.lines()[0].topic).toBe(topic)
  expect(got(rx).map(g => g.data.i).sort()).toEqual([0, 1, 2])
  await tail.stop()
  await rx.stop()
})

test('dead-letters list, show, redeliver to a fixed handler, purge', async () => {
  const topic = `${ns}.dl`
  const failFile = path.join(dir, 'broken')
  fs.writeFileSync(failFile, '')
  const rx = app('receive', conf({ maxAttempts: 1 }), { topics: [topic], failFile })
  await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
  await cli(['send', topic, '{"n":1}', '-H', 'x-keep=me'], conf())
  await cli(['send', `${ns}.other`, '{"n":2}'], conf())
  await until(() => fs.existsSync(`${box}.dead`) && fs.readFileSync(`${box}.dead`, 'utf8').includes(topic), 15000, 'dead letter')
  // the other topic has no handler in the app: it stays in the box; put one dead letter of it there too
  fs.appendFileSync(`${box}.dead`, `\n${ns}.other {"data":{"n":3},"headers":{}}`)

  const list = await cli(['dead-letters', 'list', '--json'], conf())
  const entries = JSON.parse(list.stdout)
  expect(entries.map(e => e.topic)).toEqual([topic, `${ns}.other`])
  const text = await cli(['dead-letters', 'list', '--topic', `${ns}.dl`], conf())
  expect(text.stdout).toContain(`1 dead letter(s) in ${box}.dead`)
  const show = await cli(['dead-letters', 'show', entries[0].id], conf())
  expect(show.stdout).toContain('"x-keep": "me"')
  const age = await cli(['dead-letters', 'list', '--older-than', '1m'], conf())
  expect(age.code).toBe(1)
  expect(age.stderr).toContain('records no time')

  fs.unlinkSync(failFile) // the handler is fixed
  const re = await cli(['dead-letters', 'redeliver', '--topic', topic], conf())
  expect(re.stdout).toContain(`redelivered 1 of 1 selected dead letter(s) from ${box}.dead`)
  await until(() => got(rx).length === 1, 15000, 'redelivered message')
  expect(got(rx)[0]).toMatchObject({ topic, data: { n: 1 }, headers: { 'x-keep': 'me' } })

  expect((await cli(['dead-letters', 'purge'], conf())).code).toBe(1) // needs ids, filters or --all
  const purge = await cli(['dead-letters', 'purge', '--all', '--json'], conf())
  expect(JSON.parse(purge.stdout)).toMatchObject({ selected: 1, purged: 1 })
  expect(JSON.parse((await cli(['dead-letters', 'list', '--json'], conf())).stdout)).toEqual([])
  await rx.stop()
})

test('srv.stats() after a scripted run: 1 retry, 1 dead letter', async () => {
  const p = app('stats', conf({ file: path.join(dir, 'stats-box'), maxAttempts: 3 }), { ns })
  expect(await p.exited).toBe(0)
  const { stats } = p.lines().find(l => l.stats)
  expect(stats).toMatchObject({ emitted: 3, emitFailures: 0, delivered: 4, acked: 2, redelivered: 1, deadLettered: 1, inFlight: 0, reconnects: 0 })
  expect(stats.lastError).toMatchObject({ kind: 'handler', message: 'never works' })
  expect(Math.abs(Date.now() - stats.lastError.at)).toBeLessThan(60000)
})

test('srv.stats() counts in-process redeliveries once (local kind: the engine redelivers, engine/redelivery.rs)', async () => {
  const p = app('stats', { kind: 'native-local-messaging', retryDelay: 20, maxAttempts: 3 }, { ns })
  expect(await p.exited).toBe(0)
  const { stats } = p.lines().find(l => l.stats)
  // the local emit of the dead-lettered message rejects with its handler's failure
  expect(stats).toMatchObject({ emitted: 2, emitFailures: 1, delivered: 4, acked: 2, redelivered: 1, deadLettered: 1, inFlight: 0, reconnects: 0 })
})

test('W3C trace context: the span of the emitting process is the parent of the consumer span in another', async () => {
  const topic = `${ns}.traced`
  const otel = { extraEnv: { OTEL: '1' } }
  const rx = app('receive', conf(), { topics: [topic] }, otel)
  await until(() => rx.lines().some(l => l.ready), 20000, 'receiver ready')
  const tx = app('emit', conf(), { topic, data: { x: 1 } }, otel)
  expect(await tx.exited).toBe(0)
  const { emitted } = tx.lines().find(l => l.emitted)
  await until(() => rx.lines().some(l => l.spans?.length), 15000, 'consumer span')
  const msg = got(rx)[0]
  expect(msg.headers.traceparent).toBe(`00-${emitted.traceId}-${emitted.spanId}-01`)
  const span = rx.lines().find(l => l.spans?.length).spans[0]
  expect(span).toMatchObject({
    name: `process ${topic}`,
    kind: 4, // CONSUMER
    traceId: emitted.traceId,
    parentSpanId: emitted.spanId,
    attributes: { 'messaging.system': 'file', 'messaging.destination.name': topic, 'messaging.operation': 'process' }
  })
  await rx.stop()
})
