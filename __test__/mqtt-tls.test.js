'use strict'
// native-mqtt-messaging over TLS (mqtts://) and secure WebSocket (wss://) against a private Mosquitto
// with a throw-away CA: verification is on by default, `ca` trusts the test CA.
const fs = require('node:fs')
const cds = require('@sap/cds')
const { until } = require('./helpers')
const { startMosquitto, makeCertificates } = require('./mosquitto')

const RUN = `${process.pid}${Date.now().toString(36)}`
const KIND = 'native-mqtt-messaging'

describe('native-mqtt-messaging over TLS', () => {
  let broker, certs
  const services = []
  const connect = async options => {
    const svc = await cds.connect.to({ kind: KIND, queue: `tls-${RUN}-${services.length}`, reconnectDelay: 50, ...options })
    services.push(svc)
    return svc
  }
  const roundTrip = async svc => {
    const seen = []
    svc.on(`tls${RUN}`, msg => seen.push(msg.data.n))
    await svc.startListening()
    await svc.emit(`tls${RUN}`, { n: 1 })
    await until(() => seen.length === 1, 5000, 'the delivery')
    expect(seen).toEqual([1])
  }
  beforeAll(async () => {
    certs = makeCertificates()
    broker = await startMosquitto({ tls: certs })
  })
  afterAll(async () => {
    await Promise.all(services.map(s => s.disconnect()))
    await broker?.stop()
  })

  test('mqtts:// with the CA given as a file path', async () => {
    await roundTrip(await connect({ url: `mqtts://127.0.0.1:${broker.tlsPort}`, ca: certs.ca }))
  })

  test('wss:// with the CA given as PEM text', async () => {
    await roundTrip(await connect({ url: `wss://localhost:${broker.wssPort}/mqtt`, ca: fs.readFileSync(certs.ca, 'utf8') }))
  })

  test('verification is on by default: an unknown CA is refused, the emit fails with CONNECTION_FAILED', async () => {
    const svc = await connect({ url: `mqtts://127.0.0.1:${broker.tlsPort}`, publishTimeout: 500 })
    const err = await svc.emit(`tls${RUN}`, {}).catch(e => e)
    expect(err.code).toBe('CONNECTION_FAILED')
    expect(err.message).toMatch(/not connected: .*(UnknownIssuer|certificate)/i)
  })

  test('rejectUnauthorized: false connects without verification', async () => {
    await roundTrip(await connect({ url: `mqtts://127.0.0.1:${broker.tlsPort}`, rejectUnauthorized: false }))
  })
})
