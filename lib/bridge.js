'use strict'
const { cds } = require('./cds')

/**
 * Runs `init` (a MessagingService's super.init) and narrows the `cds.on('subscribe')` bridge it
 * registers (for the service named `messaging`) to non-messaging services.
 *
 * The bridge forwards declared events of *remote* services; but `srv.events` of a service whose
 * name is not an identifier (e.g. `messaging-box`) lists every event of the model, so a handler on
 * a child messaging service would make `messaging` re-emit each message it receives — an endless
 * loop (@sap/cds's own composite has the same problem).
 */
async function withNarrowedBridge(init) {
  const before = new Set(cds.listeners('subscribe'))
  const result = await init()
  for (const listener of cds.listeners('subscribe')) {
    if (before.has(listener)) continue
    cds.off('subscribe', listener)
    cds.on('subscribe', (srv, ...rest) => (srv instanceof cds.MessagingService ? undefined : listener.call(cds, srv, ...rest)))
  }
  return result
}

module.exports = { withNarrowedBridge }
