'use strict'
// Benchmark participant: @sap/cds's own AMQP 1.0 kind (enterprise-messaging-shared, on
// @sap/xb-msg-amqp-v100) pointed at RabbitMQ 3.x's AMQP 1.0 plugin.
//
// The kind speaks SAP Event Mesh's addressing, which RabbitMQ 3.x does not understand: its sender
// attaches to the anonymous target '' and names the topic in `properties.to` ('topic:<t>'), its
// receiver attaches to 'queue:<name>', and before it listens it creates the queue and subscriptions
// through Event Mesh's management REST API. This subclass changes only those *addresses* and skips the
// management calls; every per-message step (CAP's `handle`/`message4`, the kind's emit that builds the
// AMQP message, the receiver's data handler, `processInboundMsg`, accept/reject) is @sap/cds's own.
// Addresses used instead: the sender and the receiver both use RabbitMQ's `/queue/<queue>` (the same
// one-hop path as the raw rhea participant); `properties.to` stays as CAP sets it, so the receiver
// takes the topic from it exactly as CAP does.
const path = require('node:path')
const cdsRoot = path.dirname(require.resolve('@sap/cds/package.json'))
const lib = p => require(path.join(cdsRoot, 'libx/_runtime/messaging', p))
const EnterpriseMessagingShared = lib('enterprise-messaging-shared.js')
const { connect } = lib('common-utils/connections.js')
const { Client } = require('@sap/xb-msg-amqp-v100')

class CdsAmqpOnRabbitMQ extends EnterpriseMessagingShared {
  getManagement() {
    return { createQueueAndSubscriptions: async () => {}, waitUntilReady: async () => {} }
  }

  getClient() {
    if (this.client) return this.client
    const client = super.getClient()
    const service = this
    const address = `/queue/${this.queueName}`
    // connect(): as the kind's own, but the sender link targets the queue instead of ''.
    client.connect = async function () {
      this.client = new Client(this.optionsAMQP)
      this.sender = this.client.sender(`${service.optionsApp.appName}-${service.optionsApp.appID}`)
      this.stream = this.sender.attach(address)
      await connect(this.client, service.LOG, this.keepAlive)
    }
    // listen(): the kind's data handler on a receiver of the queue instead of 'queue:<name>'.
    client.listen = function (cb) {
      return new Promise(resolve => {
        this.client
          .receiver(service.queueName)
          .attach(address)
          .on('data', async raw => {
            const payload = raw.payload && Buffer.concat(raw.payload.chunks).toString()
            const to = raw.source?.properties?.to
            const topic = to && to.replace(/^topic:\/*/, '')
            if (!topic) return raw.done()
            await cb(topic, payload, null, { done: raw.done, failed: raw.failed })
          })
          .on('subscribed', resolve)
      })
    }
    return client
  }
}

module.exports = CdsAmqpOnRabbitMQ
