'use strict'
// native-amqp-messaging across real processes on RabbitMQ 3.x (AMQP 1.0 plugin).
const { freePort } = require('./helpers')
const { URL, RUN, ensureRabbit, deleteQueues, spawnPeer, cuttableProxy, range } = require('./amqp-helpers')

const queues = []
const cfg = (name, extra = {}) => {
  const queue = `${RUN}-${name}`
  if (!queues.includes(queue)) queues.push(queue)
  return { kind: 'native-amqp-messaging', url: URL, queue: { name: queue }, sendTimeout: 60000, ...extra }
}
const topic = name => `${RUN}.${name}`

beforeAll(ensureRabbit, 150000)
afterAll(() => deleteQueues(queues))

describe('native-amqp-messaging across processes (RabbitMQ)', () => {
  test('emit → receive across two processes: 10,000 messages, none lost, none twice', async () => {
    const c = cfg('bulk')
    const receiver = spawnPeer('receive', c, { n: 10000, topic: topic('bulk') })
    await receiver.ready
    const sent = await spawnPeer('emit', c, { n: 10000, topic: topic('bulk'), chunk: 2000 }).done
    expect(sent).toMatchObject({ emitted: 10000, failed: 0 })
    const got = await receiver.done
    expect(got.dup).toBe(0)
    expect(got.received).toBe(10000)
    expect(got.ids).toEqual(range(0, 10000))
    console.log(`10,000 messages: emitted in ${sent.ms} ms, received in ${got.ms} ms`)
  }, 60000)

  test('consumer down while 1,000 messages are emitted: all arrive after it restarts', async () => {
    const c = cfg('down')
    // The consumer's first start creates its queue and binding, then it stops.
    const first = spawnPeer('receive', c, { n: 0, topic: topic('down') })
    await first.ready
    await first.done
    const sent = await spawnPeer('emit', c, { n: 1000, topic: topic('down') }).done
    expect(sent).toMatchObject({ emitted: 1000, failed: 0 })
    const got = await spawnPeer('receive', c, { n: 1000, topic: topic('down') }).done
    expect(got.ids).toEqual(range(0, 1000))
    expect(got.dup).toBe(0)
  }, 60000)

  test('connection cut mid-stream through a proxy: reconnect, nothing lost (duplicates reported)', async () => {
    const port = await freePort()
    const proxy = cuttableProxy()
    await proxy.listen(port)
    const c = cfg('cut', {
      url: `amqp://guest:guest@127.0.0.1:${port}`,
      connection: { reconnectDelay: 100, maxReconnectDelay: 1000 }
    })
    const n = 4000
    const receiver = spawnPeer('receive', c, { n, topic: topic('cut'), idleMs: 3000 })
    await receiver.ready
    const emitter = spawnPeer('emit', c, { n, topic: topic('cut'), chunk: 200 })
    await receiver.progress(1000)
    await proxy.cut()
    await new Promise(r => setTimeout(r, 1000))
    await proxy.listen(port)
    const sent = await emitter.done
    const got = await receiver.done
    expect(sent).toMatchObject({ emitted: n, failed: 0 })
    expect(got.ids).toEqual(range(0, n))
    console.log(`connection cut: ${n} emitted, ${got.received} distinct received, ${got.dup} duplicate(s); proxy saw ${proxy.connections()} connections`)
    expect(got.output).toMatch(/re-attach|again/)
    await proxy.cut()
  }, 60000)
})
