'use strict'
const { cds } = require('../lib/cds')
const { native } = require('../lib/native')
const { withNarrowedBridge } = require('../lib/bridge')
const { NativeMessagingError, codes, fromNative } = require('../lib/errors')

/**
 * `native-composite-messaging`: routes each topic to the child messaging services whose patterns
 * match it. Configured like @sap/cds's composite — `routes: { <cds.requires name>: [glob, …] }` — but
 * the patterns are compiled once in native code, anchored, with literal characters literal.
 * `unmatched: 'error' | 'drop' | '<service>'` (default `'error'`: the emit fails with `NO_ROUTE`).
 */
class NativeCompositeMessaging extends cds.MessagingService {
  async init() {
    await withNarrowedBridge(() => super.init()) // sets up this.LOG and the declared-event bridge
    const { NativeRouter } = native()
    const routes = this.options.routes
    if (!routes || typeof routes !== 'object' || Array.isArray(routes) || !Object.keys(routes).length)
      throw new NativeMessagingError(codes.INVALID_CONFIG, `${this.name}: routes must map service names to glob lists, e.g. { "messaging-box": ["orders/**"] }`)
    const specs = Object.entries(routes).map(([service, patterns]) => {
      const list = (Array.isArray(patterns) ? patterns : [patterns]).map(p => (p && typeof p === 'object' ? p.event : p))
      if (!list.every(p => typeof p === 'string'))
        throw new NativeMessagingError(codes.INVALID_CONFIG, `${this.name}: the routes of '${service}' must be glob strings`)
      return { service, patterns: list }
    })
    const unmatched = this.options.unmatched ?? 'error'
    try {
      this._router = new NativeRouter(specs, String(unmatched))
    } catch (e) {
      throw fromNative(e)
    }
    const names = [...new Set([...specs.map(s => s.service), ...(['error', 'drop'].includes(unmatched) ? [] : [unmatched])])]
    const children = await Promise.all(names.map(n => cds.connect.to(n)))
    this._children = new Map(names.map((n, i) => [n, children[i]]))
    for (const { service, patterns } of specs) this.LOG.info(`${this.name}: route ${JSON.stringify(patterns)} → ${service}: ${describe(this._children.get(service))}`)
    this.LOG.info(`${this.name}: unmatched topics: ${unmatched === 'error' ? 'emit fails with NO_ROUTE' : unmatched === 'drop' ? 'dropped with a warning' : `go to ${unmatched}`}`)
  }

  /** The routing table: `[{ service, patterns }]`. */
  routes() {
    return this._router.routes()
  }

  /** The child services a topic goes to (throws `NO_ROUTE` when none matches and unmatched is 'error'). */
  route(topic) {
    try {
      return this._router.route(topic)
    } catch (e) {
      throw fromNative(e)
    }
  }

  on(event, ...rest) {
    if (event === '*') {
      for (const child of this._children.values()) child.on('*', ...rest)
      return this
    }
    const targets = this.route(event)
    if (!targets.length) this.LOG.warn(`${this.name}: no route matches '${event}'; its handler is not registered anywhere (unmatched: 'drop')`)
    for (const t of targets) this._children.get(t).on(event, ...rest)
    return this
  }

  /** `onBatch` on every child the event routes to (each child batches its own deliveries). */
  onBatch(event, handler) {
    for (const e of Array.isArray(event) ? event : [event]) {
      const targets = this.route(e)
      if (!targets.length) this.LOG.warn(`${this.name}: no route matches '${e}'; its batch handler is not registered anywhere (unmatched: 'drop')`)
      for (const t of targets) {
        const child = this._children.get(t)
        if (typeof child.onBatch === 'function') child.onBatch(e, handler)
        else child.on(e, function (msg) {
          return handler.call(this, [msg])
        })
      }
    }
    return this
  }

  /** Each message through `emit` (routed); resolves with one `Promise.allSettled` entry per message. */
  emitMany(messages) {
    if (!Array.isArray(messages)) return Promise.reject(new NativeMessagingError(codes.INVALID_CONFIG, 'emitMany(messages) needs an array of { event, data, headers } objects'))
    return Promise.allSettled(messages.map(m => this.emit(m)))
  }

  async emit(eve, ...etc) {
    const event = typeof eve === 'object' ? eve.event : eve
    const targets = this.route(event)
    if (!targets.length) {
      this.LOG.warn(`${this.name}: dropped a message on topic '${event}': no route matches (unmatched: 'drop')`)
      return
    }
    const context = this.context
    await Promise.all(targets.map(t => {
      const child = this._children.get(t)
      return context ? child.tx(context).emit(eve, ...etc) : child.emit(eve, ...etc)
    }))
  }

  async disconnect() {
    await Promise.all([...this._children.values()].map(c => typeof c.disconnect === 'function' && c.disconnect()))
  }
}

function describe(child) {
  const g = child?._engine?.guarantee?.()
  return g ? `${child.options.kind}, ${g.summary}` : `${child?.options?.kind ?? 'unknown kind'} (not a native kind; its own guarantees apply)`
}

module.exports = NativeCompositeMessaging
