'use strict'
// A small CAP process for the operations suites (CLI, stats, trace context), configured by
// CDS_CONFIG like an app. Roles:
//   receive {topics, failFile?, delayMs?, failTopics?} prints {"ready":true}, then {"got":{topic,data,headers}}
//                                per message; a handler fails while the file `failFile` exists, and at
//                                once (before delayMs) on the topics `failTopics`
//   emit {topic, data, headers?} emits one message (inside an OTel span when OTEL=1) and prints it
//   stats                        runs a scripted scenario (1 retry, 1 dead letter) and prints srv.stats()
// With OTEL=1 an OTel SDK with an in-memory exporter is registered; finished spans are printed.
const fs = require('node:fs')
const [role, argsJson] = process.argv.slice(2)
const args = JSON.parse(argsJson || '{}')

let exporter
if (process.env.OTEL === '1') {
  const api = require('@opentelemetry/api')
  const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base')
  const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks')
  exporter = new InMemorySpanExporter()
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  api.trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }))
}
const cds = require('@sap/cds')

const print = v => console.log(JSON.stringify(v))
const spans = () =>
  exporter.getFinishedSpans().map(s => ({
    name: s.name,
    kind: s.kind,
    traceId: s.spanContext().traceId,
    spanId: s.spanContext().spanId,
    parentSpanId: s.parentSpanContext?.spanId ?? s.parentSpanId,
    attributes: s.attributes
  }))

async function receive(m) {
  for (const topic of args.topics) {
    m.on(topic, async msg => {
      if (args.failTopics?.includes(topic)) throw new Error(`${topic} always fails`)
      if (args.delayMs) await new Promise(r => setTimeout(r, args.delayMs))
      if (args.failFile && fs.existsSync(args.failFile)) throw new Error(`failing while ${args.failFile} exists`)
      print({ got: { topic: msg.event, data: msg.data, headers: msg.headers }, stats: m.stats() })
      if (exporter) setTimeout(() => print({ spans: spans() }), 50)
    })
  }
  await m.startListening()
  print({ ready: true })
}

async function emit(m) {
  const go = () => m.emit(args.topic, args.data, args.headers || {})
  if (exporter) {
    const api = require('@opentelemetry/api')
    await api.trace.getTracer('test').startActiveSpan('request', async span => {
      await go()
      span.end()
      print({ emitted: { traceId: span.spanContext().traceId, spanId: span.spanContext().spanId } })
    })
  } else {
    await go()
    print({ emitted: true })
  }
  await m.disconnect()
  process.exit(0)
}

async function stats(m) {
  let flaky = 0
  const done = new Set()
  m.on(`${args.ns}.flaky`, () => {
    if (++flaky === 1) throw new Error('first attempt fails')
    done.add('flaky')
  })
  m.on(`${args.ns}.poison`, () => {
    const e = new Error('never works')
    e.unrecoverable = true
    done.add('poison')
    throw e
  })
  m.on(`${args.ns}.fine`, () => done.add('fine'))
  await m.startListening()
  // (the local kind's emit rejects with the handler's failure once the message is dead-lettered)
  const handled = e => {
    if (e.code !== 'HANDLER_FAILED') throw e
  }
  for (const t of ['flaky', 'poison', 'fine']) await m.emit(`${args.ns}.${t}`, { t }).catch(handled)
  const t0 = Date.now()
  while (Date.now() - t0 < 20000) {
    const s = m.stats()
    if (done.size === 3 && s.inFlight === 0 && s.acked === 2 && s.deadLettered === 1) break
    await new Promise(r => setTimeout(r, 20))
  }
  print({ stats: m.stats() })
  await m.disconnect()
  process.exit(0)
}

const roles = { receive, emit, stats }
cds
  .connect.to('messaging')
  .then(m => roles[role](m))
  .catch(e => {
    console.error('ops-app failed:', e)
    process.exit(2)
  })
