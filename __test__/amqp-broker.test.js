'use strict'
// native-amqp-messaging names the broker it connected to (from the AMQP open frame) and warns when
// the configured profile does not fit it. Against the live RabbitMQ 3.x (AMQP 1.0 plugin).
const path = require('node:path')
const { until } = require('./helpers')
const { URL, RUN, ensureRabbit, deleteQueues } = require('./amqp-helpers')

const queues = [`${RUN}-app`]
process.env.CDS_CONFIG = JSON.stringify({
  requires: {
    messaging: { kind: 'native-amqp-messaging', url: URL, queue: { name: queues[0] }, publishPrefix: `${RUN}.`, subscribePrefix: `${RUN}.` }
  }
})
const cds = require('@sap/cds')

describe('native-amqp-messaging: broker identification', () => {
  beforeAll(ensureRabbit, 150000)
  cds.test(path.join(__dirname, 'apps', 'reviews'))
  const log = cds.test.log()
  const others = []
  afterAll(async () => {
    for (const s of others) await s.disconnect()
    await (await cds.connect.to('messaging')).disconnect()
    deleteQueues(queues)
  })

  test("logs the broker's product and version; no warning with profile 'rabbitmq'", async () => {
    const messaging = await cds.connect.to('messaging')
    await messaging.emit(`${RUN}.hello`, { a: 1 })
    await until(() => /AMQP broker at amqp:\/\/127\.0\.0\.1:5672: RabbitMQ 3\.\d+\.\d+/.test(log.output), 10000, 'the broker line')
    expect(log.output).not.toMatch(/configured with profile/)
  })

  test("warns when the profile does not fit the broker (profile 'artemis' on RabbitMQ 3)", async () => {
    queues.push(`${RUN}-artemis`)
    const s = await cds.connect.to(`${RUN}-artemis`, { kind: 'native-amqp-messaging', url: URL, profile: 'artemis', queue: { name: `${RUN}-artemis` } })
    others.push(s)
    await s.emit(`${RUN}.hello`, { a: 2 }).catch(() => {}) // RabbitMQ may refuse Artemis's addresses
    await until(() => /configured with profile 'artemis'/.test(log.output), 10000, 'the profile warning')
    const lines = log.output.split('\n').filter(l => /configured with profile/.test(l))
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/the AMQP broker at amqp:\/\/127\.0\.0\.1:5672 is RabbitMQ 3\.\d+\.\d+, but this service is configured with profile 'artemis'.*set profile: 'rabbitmq'/)
  })
})
