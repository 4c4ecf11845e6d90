'use strict'
// Odd handlers and odd options (issue #14): falsy rejections (defect 2), error values that cannot
// be shown as text (defect 9), absurd capacities (defect 7).
const { spawnSync } = require('node:child_process')
const path = require('node:path')
const cds = require('@sap/cds')
const { tmpDir } = require('./helpers')

const local = name => cds.connect.to(`${name}-${process.pid}`, { kind: 'native-local-messaging', maxAttempts: 3, retryDelay: 5, maxRetryDelay: 20 })

describe('a handler that fails with a falsy value counts as failed (defect 2)', () => {
  const cases = {
    'throw undefined': () => {
      throw undefined
    },
    'throw null': () => {
      throw null
    },
    'Promise.reject()': () => Promise.reject(),
    'reject(undefined) in an async handler': async () => {
      await new Promise((resolve, reject) => setTimeout(() => reject(undefined), 1))
    },
    "throw ''": () => {
      throw ''
    }
  }
  for (const [name, handler] of Object.entries(cases)) {
    test(`${name}: redelivered up to maxAttempts, then the emit rejects with HANDLER_FAILED`, async () => {
      const m = await local(`falsy-${name.replace(/\W+/g, '-')}`)
      let calls = 0
      m.on('falsy', (...args) => {
        calls++
        return handler(...args)
      })
      const err = await m.emit('falsy', { x: 1 }).then(
        () => null,
        e => e
      )
      expect(calls).toBe(3)
      expect(err?.code).toBe('HANDLER_FAILED')
      expect(err.message).toMatch(/instead of an Error/)
      expect(m.deadLetters()).toHaveLength(1)
      await m.disconnect()
    })
  }

  test('a handler that succeeds still returns its value and stays synchronous', async () => {
    const m = await local('falsy-ok')
    let calls = 0
    m.on('fine', () => {
      calls++
      return 42
    })
    await m.emit('fine', {})
    expect(calls).toBe(1)
    await m.disconnect()
  })
})

describe('an error value that cannot be shown as text (defect 9)', () => {
  const cases = {
    'Object.create(null)': () => Object.create(null),
    'a message getter that throws': () => ({
      get message() {
        throw new Error('no message for you')
      }
    }),
    'code and unrecoverable getters that throw': () =>
      Object.defineProperties(new Error('odd'), {
        code: {
          get() {
            throw new Error('x')
          }
        },
        unrecoverable: {
          get() {
            throw new Error('y')
          }
        }
      }),
    'a Symbol': () => Symbol('odd')
  }
  for (const [name, make] of Object.entries(cases)) {
    test(`${name}: maxAttempts is honoured and the local emit settles`, async () => {
      const m = await local(`odd-${name.replace(/\W+/g, '-')}`)
      let calls = 0
      m.on('odd', () => {
        calls++
        throw make()
      })
      const err = await m.emit('odd', {}).then(
        () => null,
        e => e
      )
      expect(calls).toBe(3)
      expect(err?.code).toBe('HANDLER_FAILED')
      await m.disconnect()
    })
  }
})

describe('absurd capacities are INVALID_CONFIG, naming the maximum (defect 7)', () => {
  test('file kind with maxInFlight 1e9 fails to connect instead of aborting the process', () => {
    const box = path.join(tmpDir('huge-in-flight'), 'box')
    // In a child process: before the fix the allocator aborted the whole process (SIGABRT).
    const script = `
      const cds = require('@sap/cds')
      cds.connect.to('messaging', { kind: 'native-file-based-messaging', file: ${JSON.stringify(box)}, maxInFlight: 1e9 })
        .then(async m => {
          m.on('t', () => {})
          await m.startListening()
          await m.emit('t', {})
          await new Promise(r => setTimeout(r, 1500))
          console.log(JSON.stringify({ connected: true }))
          process.exit(0)
        }, e => { console.log(JSON.stringify({ code: e.code, message: e.message })); process.exit(0) })`
    const r = spawnSync(process.execPath, ['-e', script], { cwd: path.join(__dirname, 'apps', 'box-peer'), encoding: 'utf8', timeout: 30000 })
    expect(r.signal).toBe(null)
    const last = JSON.parse(r.stdout.trim().split('\n').pop())
    expect(last.code).toBe('INVALID_CONFIG')
    expect(last.message).toMatch(/maxInFlight .*maximum 100000/)
  })

  test.each([
    ['native-local-messaging', { maxBatch: 1e9 }, /maxBatch .*maximum 100000/],
    ['native-redis-messaging', { mode: 'streams', readCount: 1e9 }, /readCount .*maximum 100000/],
    ['native-amqp-messaging', { credentials: { url: 'amqp://127.0.0.1:1' }, prefetch: 1e9 }, /prefetch .*maximum 200000/]
  ])('%s with %j', async (kind, options, message) => {
    const err = await cds.connect.to(`huge-${kind}-${process.pid}`, { kind, ...options }).then(
      m => (m.disconnect(), null),
      e => e
    )
    expect(err?.code).toBe('INVALID_CONFIG')
    expect(err.message).toMatch(message)
  })
})
