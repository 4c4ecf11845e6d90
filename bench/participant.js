'use strict'
// What every runner of bench/worker.js shares (bench/run.js, bench/threads.js): where the app is, the CAP
// floor's configuration, and the CDS_CONFIG a participant runs with.
const path = require('node:path')

/** The CAP app the participants run in (its package.json resolves @sap/cds and the peers). */
const APP = path.join(__dirname, 'app')
/** The CAP floor: a `cds.MessagingService` with no transport (bench/app/peers/floor.js). */
const FLOOR = { kind: 'bench-floor', impl: path.join(APP, 'peers', 'floor.js') }

/**
 * Log levels of a participant run at `warn`: CAP's messaging services log through `cds.log('<kind>|messaging')`,
 * whose level is the one configured for `<kind>`, not for `messaging`, and `<kind>` is the kind @sap/cds resolved
 * (enterprise-messaging-shared logs as `enterprise-messaging-amqp`). redis-messaging, file-based-messaging and the
 * AMQP kinds log every emit at info. So `messaging`, the participant's kind and @sap/cds's messaging kinds are set.
 */
function quiet(kind) {
  const kinds = ['local-messaging', 'file-based-messaging', 'redis-messaging', 'enterprise-messaging', 'enterprise-messaging-shared', 'enterprise-messaging-amqp', 'enterprise-messaging-http', 'composite-messaging']
  return Object.fromEntries(['messaging', ...kinds, ...(kind ? [kind] : [])].map(k => [k, 'warn']))
}

/** The CDS_CONFIG of a participant: its messaging service, logging at warn (`cds-default`: @sap/cds's defaults). */
function cdsConfig(spec) {
  const { $log, ...messaging } = spec.config
  const log = { levels: $log || (spec.impl === 'cds-default' ? {} : quiet(messaging.kind)) }
  return JSON.stringify({ requires: { messaging }, log })
}

module.exports = { APP, FLOOR, cdsConfig }
