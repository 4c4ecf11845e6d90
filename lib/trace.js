'use strict'
// W3C trace context across messages, for every kind (it is just a header).
//
// Outbound: `traceparent` / `tracestate` from the active OpenTelemetry span, else from the inbound
// message being processed. Inbound: processing continues the message's trace — with an OTel tracer
// registered, in a consumer span per message (OTel messaging semantic conventions).
//
// `@opentelemetry/api` is required lazily and optionally; without it, and for messages without a
// `traceparent`, nothing is done beyond a property lookup.
const { AsyncLocalStorage } = require('node:async_hooks')

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/
const INVALID_TRACE = '0'.repeat(32)
const INVALID_SPAN = '0'.repeat(16)

let api // undefined: not looked up yet; null: not installed
const current = new AsyncLocalStorage()

/** `@opentelemetry/api`, from this package's or the app's dependencies, or null. */
function otel() {
  if (api !== undefined) return api
  api = null
  for (const paths of [[__dirname], [process.cwd()]]) {
    try {
      api = require(require.resolve('@opentelemetry/api', { paths }))
      break
    } catch {
      /* not installed there */
    }
  }
  return api
}

/** For tests: forget the looked-up API (e.g. after installing a tracer provider). */
function reset() {
  api = undefined
}

/** Parses a `traceparent` header; null when it is not a valid version-00-compatible value. */
function parse(traceparent) {
  const m = typeof traceparent === 'string' && TRACEPARENT.exec(traceparent.trim().toLowerCase())
  if (!m || m[1] === 'ff' || m[2] === INVALID_TRACE || m[3] === INVALID_SPAN) return null
  return { traceId: m[2], spanId: m[3], traceFlags: parseInt(m[4], 16) }
}

function format({ traceId, spanId, traceFlags }) {
  return `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, '0')}`
}

/** The span context of the active OTel span, or null. */
function activeSpanContext() {
  const o = otel()
  if (!o) return null
  const sc = o.trace.getSpan(o.context.active())?.spanContext()
  return sc && o.trace.isSpanContextValid(sc) ? sc : null
}

/**
 * Adds `traceparent` / `tracestate` to an outbound message's headers (kept when the app set them):
 * from the active OTel span, else from the inbound message being processed.
 */
function outbound(msg) {
  if (msg.headers?.traceparent) return
  const sc = activeSpanContext()
  let traceparent, tracestate
  if (sc) {
    traceparent = format(sc)
    tracestate = sc.traceState?.serialize() || undefined
  } else {
    const inbound = current.getStore()
    if (!inbound) return
    ;({ traceparent, tracestate } = inbound)
  }
  const headers = (msg.headers ??= {})
  headers.traceparent = traceparent
  if (tracestate) headers.tracestate = tracestate
}

function tracer(o) {
  const provider = o.trace.getTracerProvider()
  // A ProxyTracerProvider without a delegate (nothing registered) only makes no-op spans.
  const delegate = typeof provider.getDelegate === 'function' ? provider.getDelegate() : provider
  if (!delegate || delegate.constructor?.name === 'NoopTracerProvider') return null
  return o.trace.getTracer('cds-native-messaging')
}

/**
 * Runs `fn` (the processing of inbound `msg` by `srv`) in the message's trace: emits made by the
 * handlers carry its trace context, and with an OTel tracer registered a consumer span is its child.
 * @param {{ name: string, kind?: string, options?: object }} srv
 * @param {{ event: string, headers?: object }} msg
 * @param {() => Promise<any>} fn
 */
function inbound(srv, msg, fn) {
  const headers = msg.headers
  const parent = headers?.traceparent ? parse(headers.traceparent) : null
  const o = otel()
  const t = o && tracer(o)
  if (!parent && !t) return fn()
  const tracestate = typeof headers?.tracestate === 'string' ? headers.tracestate : undefined
  if (!t) return current.run({ traceparent: format(parent), tracestate }, fn)
  let ctx = o.context.active()
  if (parent) {
    const traceState = tracestate && o.createTraceState ? o.createTraceState(tracestate) : undefined
    ctx = o.trace.setSpanContext(ctx, { ...parent, isRemote: true, traceState })
  }
  const attributes = {
    'messaging.system': system(srv),
    'messaging.destination.name': msg.event,
    'messaging.operation': 'process',
    'messaging.operation.type': 'process',
    'messaging.operation.name': 'process'
  }
  const id = headers?.id ?? headers?.['x-message-id'] ?? headers?.['x-correlation-id']
  if (id != null) attributes['messaging.message.id'] = String(id)
  return t.startActiveSpan(`process ${msg.event}`, { kind: o.SpanKind.CONSUMER, attributes }, ctx, async span => {
    try {
      return await fn()
    } catch (e) {
      span.recordException(e)
      span.setStatus({ code: o.SpanStatusCode.ERROR, message: String(e?.message ?? e) })
      throw e
    } finally {
      span.end()
    }
  })
}

const SYSTEMS = { 'file-based': 'file', local: 'local', redis: 'redis', mqtt: 'mqtt', amqp: 'amqp', composite: 'composite' }

/** `messaging.system` of a service: the broker where known (`rabbitmq`), else its kind's backend. */
function system(srv) {
  const o = srv.options || {}
  const kind = String(o.kind || '').replace(/^native-|-messaging$/g, '')
  if (kind === 'amqp' && /^rabbitmq/.test(o.profile ?? 'rabbitmq')) return 'rabbitmq'
  return SYSTEMS[kind] ?? (kind || 'cds-native-messaging')
}

module.exports = { outbound, inbound, parse, format, reset }
