'use strict'
// AMQP 1.0 front end of the fake Event Mesh (rhea, served over WebSocket connections the gateway
// accepted): publish with an anonymous sender and `to: topic:<t>` (or a `topic:<t>` / `queue:<q>`
// target), consume from `queue:<q>` sources. Outcomes: accepted removes the message, released and
// modified give it back, rejected drops it (into the queue's `deadMsgQueue` when it has one).
const rhea = require('rhea')

function amqpFrontEnd(broker, log) {
  const container = rhea.create_container({ id: 'fake-event-mesh' })
  // SAP's client authenticates with the bearer on the upgrade and still runs SASL (PLAIN guest/guest).
  container.sasl_server_mechanisms.enable_anonymous()
  container.sasl_server_mechanisms.enable_plain(() => true)
  const consumers = new Set()
  const outcomes = []

  container.on('receiver_open', ctx => {
    ctx.receiver.set_target(ctx.receiver.remote.attach.target || {})
  })
  container.on('message', ctx => {
    const target = ctx.receiver.target && ctx.receiver.target.address
    const to = String(ctx.message.to || target || '')
    const body = bodyBytes(ctx.message.body)
    const contentType = ctx.message.content_type || 'application/json'
    log({ kind: 'amqp-transfer', to, target: target || null, contentType })
    if (to.startsWith('topic:')) {
      broker.publish(to.slice(6), body, { contentType, via: 'amqp' })
      ctx.delivery.accept()
    } else if (to.startsWith('queue:') && broker.publishToQueue(to.slice(6), body, { contentType })) {
      ctx.delivery.accept()
    } else {
      ctx.delivery.reject({ condition: 'amqp:not-found', description: `no such address: ${to}` })
    }
  })

  container.on('sender_open', ctx => {
    const sender = ctx.sender
    const address = sender.remote.attach.source && sender.remote.attach.source.address
    sender.set_source(sender.remote.attach.source)
    const q = address && address.startsWith('queue:') && broker.queue(address.slice(6))
    log({ kind: 'amqp-attach', source: address, ok: !!q })
    if (!q) {
      sender.close({ condition: 'amqp:not-found', description: `queue ${address} does not exist` })
      return
    }
    const consumer = { sender, queue: q, inFlight: new Map() }
    const pump = () => {
      while (sender.is_open() && sender.sendable() && q.ready.length) {
        const m = q.take(null)
        q.unacked.set(m.id, { message: m, timer: undefined })
        const d = sender.send({
          to: m.topic ? `topic:${m.topic}` : undefined,
          content_type: m.contentType,
          message_id: m.id,
          delivery_count: m.deliveryCount - 1,
          body: rhea.message.data_section(m.body)
        })
        consumer.inFlight.set(d, m.id)
      }
    }
    consumer.pump = pump
    q.listeners.add(pump)
    consumers.add(consumer)
    pump()
  })
  container.on('sendable', ctx => {
    for (const c of consumers) if (c.sender === ctx.sender) c.pump()
  })
  const settle = (ctx, state) => {
    for (const c of consumers) {
      const id = c.inFlight.get(ctx.delivery)
      if (id === undefined) continue
      c.inFlight.delete(ctx.delivery)
      outcomes.push({ state, queue: c.queue.name, id, remote: ctx.delivery.remote_state })
      log({ kind: 'amqp-outcome', state, queue: c.queue.name })
      if (state === 'accepted') c.queue.ack(id)
      else if (state === 'rejected') {
        const u = c.queue.unacked.get(id)
        c.queue.ack(id)
        const dmq = c.queue.config.deadMsgQueue
        if (u && dmq) broker.publishToQueue(dmq, u.message.body, { contentType: u.message.contentType, topic: u.message.topic })
      } else c.queue.giveBack(id)
    }
  }
  // rhea reports 'modified' as 'released' too; the remote state tells them apart.
  container.on('accepted', ctx => settle(ctx, 'accepted'))
  container.on('rejected', ctx => settle(ctx, 'rejected'))
  container.on('released', ctx => {
    const r = ctx.delivery.remote_state
    settle(ctx, r && r.constructor && r.constructor.composite_type === 'modified' ? 'modified' : 'released')
  })
  const drop = ctx => {
    for (const c of [...consumers])
      if ((ctx.sender && c.sender === ctx.sender) || (ctx.connection && c.sender.connection === ctx.connection)) {
        consumers.delete(c)
        c.queue.listeners.delete(c.pump)
        for (const id of c.inFlight.values()) c.queue.giveBack(id)
        c.inFlight.clear()
      }
  }
  container.on('sender_close', drop)
  container.on('connection_close', drop)
  container.on('disconnected', drop)
  container.on('error', () => {})
  container.on('connection_error', () => {})

  return {
    outcomes,
    consumers,
    /** Serves AMQP on an accepted `ws` WebSocket. */
    accept(ws) {
      container.websocket_accept(ws)
    }
  }
}

function bodyBytes(body) {
  if (body && body.typecode === 0x75) return Buffer.from(body.content)
  if (Buffer.isBuffer(body)) return body
  if (typeof body === 'string') return Buffer.from(body)
  return Buffer.from(JSON.stringify(body))
}

module.exports = { amqpFrontEnd }
