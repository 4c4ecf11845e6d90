'use strict'
// Benchmark participant: @sap/cds's own Event Mesh kind (enterprise-messaging-shared: AMQP 1.0 over
// WebSocket with an OAuth2 token, on @sap/xb-msg-amqp-v100) against the FAKE Event Mesh of
// __test__/fake-event-mesh, with Event Mesh's own addresses (anonymous sender, `topic:<t>`,
// receiver on `queue:<q>`).
//
// Only one thing is changed: the management API calls made before listening. @sap/cds sends them to
// https on port 443 of the management host whatever the binding's URL says (it drops port and path),
// which a benchmark cannot take on a shared machine; bench/drivers.js creates the queue and its
// subscription on the fake beforehand, as those calls would. Token request, WebSocket upgrade, links
// and every per-message step are @sap/cds's own.
const path = require('node:path')
const cdsRoot = path.dirname(require.resolve('@sap/cds/package.json'))
const EnterpriseMessagingShared = require(path.join(cdsRoot, 'libx/_runtime/messaging/enterprise-messaging-shared.js'))

class CdsEventMeshOnFake extends EnterpriseMessagingShared {
  getManagement() {
    return { createQueueAndSubscriptions: async () => {}, waitUntilReady: async () => {} }
  }
}

module.exports = CdsEventMeshOnFake
