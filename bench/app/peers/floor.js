'use strict'
// Benchmark participant "CAP floor": a cds.MessagingService with no transport at all. Each emit goes
// through CAP's own outbound path (`message4`), is serialised and parsed again as a broker kind would,
// and comes back one event-loop turn later through CAP's inbound path (`processInboundMsg`). What it
// costs per message is what any kind pays through the standard API before it moves a single byte.
const cds = require('@sap/cds')

class CapFloor extends cds.MessagingService {
  async init() {
    // `handle` runs on transaction objects derived from the service; inbound messages enter through
    // the service itself, as a broker kind's consumer would call it.
    this.service = this
    return super.init()
  }

  async handle(msg) {
    if (msg.inbound) return super.handle(msg)
    const out = this.message4(msg)
    const wire = JSON.stringify({ data: out.data, headers: out.headers })
    await new Promise(resolve => setImmediate(resolve))
    const back = JSON.parse(wire)
    return this.service.processInboundMsg({}, { event: out.event, data: back.data, headers: back.headers })
  }
}

module.exports = CapFloor
