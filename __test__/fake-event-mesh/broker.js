'use strict'
// The fake Event Mesh's message store: queues, their topic subscriptions, and the messages in them.
// Protocol front ends (REST, webhook pushes, AMQP over WebSocket) share one store, so a message
// published over REST can be consumed over AMQP and the other way round.

/**
 * Whether `topic` matches an Event Mesh subscription pattern: levels are separated by `/`, `+` (or `*`)
 * matches exactly one level, `#` at the end matches any number of remaining levels (also none).
 */
function topicMatches(pattern, topic) {
  const p = pattern.split('/')
  const t = topic.split('/')
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '#' && i === p.length - 1) return true
    if (i >= t.length) return false
    if (p[i] === '+' || p[i] === '*') continue
    if (p[i] !== t[i]) return false
  }
  return p.length === t.length
}

let seq = 0

class Queue {
  constructor(name, config) {
    this.name = name
    this.config = config || {}
    this.subscriptions = new Set()
    this.ready = [] // messages waiting for a consumer
    this.unacked = new Map() // id -> { message, timer } handed out, not yet acknowledged
    this.listeners = new Set() // called when a message becomes ready
  }

  enqueue(message) {
    this.ready.push(message)
    for (const l of this.listeners) l()
  }

  /** Takes the next message; with `ackTimeout` it comes back unless acknowledged in time. */
  take(ackTimeout) {
    const message = this.ready.shift()
    if (!message) return undefined
    message.deliveryCount++
    if (ackTimeout != null) {
      const timer = setTimeout(() => this.giveBack(message.id), ackTimeout)
      timer.unref?.()
      this.unacked.set(message.id, { message, timer })
    }
    return message
  }

  ack(id) {
    const u = this.unacked.get(id)
    if (!u) return false
    clearTimeout(u.timer)
    this.unacked.delete(id)
    return true
  }

  /** A handed-out message goes back to the front of the queue (nack, lost consumer, ack timeout). */
  giveBack(id) {
    const u = this.unacked.get(id)
    if (!u) return false
    clearTimeout(u.timer)
    this.unacked.delete(id)
    this.ready.unshift(u.message)
    for (const l of this.listeners) l()
    return true
  }

  get depth() {
    return this.ready.length + this.unacked.size
  }
}

class Broker {
  constructor() {
    this.queues = new Map()
    this.published = [] // every message accepted for a topic: { topic, body, contentType, via, qos }
  }

  queue(name) {
    return this.queues.get(name)
  }

  /** Creates a queue; `true` when it was created, `false` when it existed (config then updated). */
  putQueue(name, config) {
    const q = this.queues.get(name)
    if (q) {
      if (config && Object.keys(config).length) q.config = config
      return false
    }
    this.queues.set(name, new Queue(name, config))
    return true
  }

  deleteQueue(name) {
    const q = this.queues.get(name)
    if (!q) return false
    for (const id of [...q.unacked.keys()]) q.ack(id)
    this.queues.delete(name)
    return true
  }

  /** Publishes to a topic: every queue with a matching subscription gets a copy. */
  publish(topic, body, { contentType = 'application/json', via = 'rest', qos, zid } = {}) {
    this.published.push({ topic, body, contentType, via, qos, zid })
    let routed = 0
    for (const q of this.queues.values())
      if ([...q.subscriptions].some(p => topicMatches(p, topic))) {
        q.enqueue(newMessage(topic, body, contentType))
        routed++
      }
    return routed
  }

  /** Publishes straight into a queue (no topic subscription needed). */
  publishToQueue(name, body, { contentType = 'application/json', topic } = {}) {
    const q = this.queues.get(name)
    if (!q) return false
    q.enqueue(newMessage(topic, body, contentType))
    return true
  }
}

function newMessage(topic, body, contentType) {
  return { id: `m-${++seq}-${Date.now().toString(36)}`, topic, body: Buffer.isBuffer(body) ? body : Buffer.from(String(body)), contentType, deliveryCount: 0 }
}

module.exports = { Broker, Queue, topicMatches }
