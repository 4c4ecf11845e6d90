'use strict'
// Raw rhea on RabbitMQ's AMQP 1.0 plugin: unsettled sends (resolve on `accepted`) to the queue
// address /queue/<q> and a receiver on the same queue with manual acceptance and a credit window;
// `durable: true` sends persistent messages (header.durable) into a durable queue, as our kind does by
// default: RabbitMQ persists a persistent message only in a durable queue, and its AMQP 1.0 plugin declares
// the queue of a `/queue/<q>` terminus durable only when the terminus is (`durable: 2`, unsettled state).
const rhea = require('rhea')

module.exports = async ({ host = '127.0.0.1', port = 5672, username = 'guest', password = 'guest', queue, credit = 200, durable = false }) => {
  const container = rhea.create_container({ id: `bench-raw-${process.pid}` })
  const conn = container.connect({ host, port, username, password, reconnect: false })
  await new Promise((resolve, reject) => {
    conn.once('connection_open', resolve)
    conn.once('connection_error', reject)
    conn.once('disconnected', c => c.error && reject(c.error))
  })
  const address = `/queue/${queue}`
  const terminus = durable ? { address, durable: 2 } : { address }
  const sender = conn.open_sender({ target: terminus })
  await new Promise(r => sender.once('sendable', r))
  const pending = new Map()
  sender.on('accepted', ctx => pending.get(ctx.delivery.id)?.resolve())
  sender.on('rejected', ctx => pending.get(ctx.delivery.id)?.reject(new Error('rejected')))
  sender.on('settled', ctx => pending.delete(ctx.delivery.id))
  const handlers = []
  return {
    emit: (topic, data) =>
      new Promise((resolve, reject) => {
        const d = sender.send({ durable, subject: topic, body: rhea.message.data_section(Buffer.from(JSON.stringify({ data }))), content_type: 'application/json' })
        pending.set(d.id, { resolve, reject })
      }),
    on: (topic, fn) => handlers.push(fn),
    listen: async () => {
      const receiver = conn.open_receiver({ source: terminus, autoaccept: false, credit_window: credit })
      receiver.on('message', ctx => {
        const body = ctx.message.body
        const text = Buffer.isBuffer(body?.content) ? body.content.toString() : typeof body === 'string' ? body : JSON.stringify(body)
        const data = JSON.parse(text).data
        for (const fn of handlers) fn(data)
        ctx.delivery.accept()
      })
      await new Promise(r => receiver.once('receiver_open', r))
    },
    close: async () => conn.close()
  }
}
