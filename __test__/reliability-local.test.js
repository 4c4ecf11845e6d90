'use strict'
// native-local-messaging event chains (issue #14, defect 10): handlers that `await srv.emit(…)`
// deadlocked once the outer emits held every in-flight permit.
const cds = require('@sap/cds')

describe('nested emits of the local kind', () => {
  test('200 concurrent outer emits whose handlers await a nested emit all resolve', async () => {
    const m = await cds.connect.to(`nested-${process.pid}`, { kind: 'native-local-messaging', retryDelay: 5 })
    let inner = 0
    m.on('outer', async msg => {
      await m.emit('inner', { i: msg.data.i })
    })
    m.on('inner', async msg => {
      await m.emit('innermost', { i: msg.data.i }) // two levels deep
      inner++
    })
    m.on('innermost', () => {})
    const all = Promise.all(Array.from({ length: 200 }, (_, i) => m.emit('outer', { i })))
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error(`deadlock: ${inner} of 200 inner handlers finished`)), 15000).unref())
    await Promise.race([all, timeout])
    expect(inner).toBe(200)
    await m.disconnect()
  }, 30000)

  test('a failing nested handler is retried and its emit rejects after maxAttempts', async () => {
    const m = await cds.connect.to(`nested-fail-${process.pid}`, { kind: 'native-local-messaging', retryDelay: 5, maxAttempts: 2 })
    let calls = 0
    m.on('outer2', async () => {
      const err = await m.emit('inner2', {}).catch(e => e)
      if (err?.code !== 'HANDLER_FAILED') throw new Error(`expected HANDLER_FAILED, got ${err}`)
    })
    m.on('inner2', () => {
      calls++
      throw new Error('nope')
    })
    await m.emit('outer2', {})
    expect(calls).toBe(2)
    await m.disconnect()
  })
})
