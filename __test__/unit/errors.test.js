'use strict'
// The error codes are stated in Rust (src/error.rs ErrorCode), lib/errors.js and index.d.ts: the
// three lists must be equal, and native errors must carry their code as data (no message parsing).
const fs = require('node:fs')
const path = require('node:path')
const { codes, fromNative, fromFailure, NativeMessagingError } = require('../../lib/errors')
const { native } = require('../../lib/native')

describe('error codes', () => {
  test("lib/errors.js codes equal the binding's errorCodes()", () => {
    expect(Object.keys(codes).sort()).toEqual([...native().errorCodes()].sort())
    for (const [k, v] of Object.entries(codes)) expect(v).toBe(k)
  })

  test("index.d.ts's ErrorCode lists the same codes", () => {
    const dts = fs.readFileSync(path.join(__dirname, '..', '..', 'index.d.ts'), 'utf8')
    const m = /export type NativeMessagingErrorCode =([^;]+);/.exec(dts)
    expect(m).not.toBeNull()
    const listed = [...m[1].matchAll(/'([A-Z_]+)'/g)].map(x => x[1])
    expect(listed.sort()).toEqual([...native().errorCodes()].sort())
  })

  test('a native throw has err.code set natively, and the message carries no code prefix', () => {
    const { NativeRouter } = native()
    let err
    try {
      new NativeRouter([{ service: 's', patterns: ['a/**'] }], 'error').route('b')
    } catch (e) {
      err = e
    }
    expect(Object.prototype.toString.call(err)).toBe('[object Error]') // (a native Error is of another realm than jest's)
    expect(err.code).toBe('NO_ROUTE')
    expect(err.message).not.toMatch(/^NO_ROUTE/)
    const wrapped = fromNative(err)
    expect(wrapped).toBeInstanceOf(NativeMessagingError)
    expect(wrapped.code).toBe('NO_ROUTE')
    expect(wrapped.cause).toBe(err)
  })

  test('the engine constructor throws INVALID_CONFIG as err.code', () => {
    const { NativeEngine } = native()
    let err
    try {
      new NativeEngine({ transport: 'local', maxBatch: 1.5 })
    } catch (e) {
      err = e
    }
    expect(err.code).toBe('INVALID_CONFIG')
    expect(err.message).toMatch(/maxBatch must be a non-negative whole number/)
  })

  test('a message that merely starts like a code is not taken for one', () => {
    const e = fromNative(new Error('CLOSED: looks like a code'))
    expect(e.code).toBe('INTERNAL')
    expect(e.message).toBe('CLOSED: looks like a code')
  })

  test('failures resolve as data', () => {
    const e = fromFailure({ code: 'CLOSED', message: 'the messaging service was shut down' })
    expect(e).toBeInstanceOf(NativeMessagingError)
    expect(e.code).toBe('CLOSED')
    expect(e.message).toBe('the messaging service was shut down')
    expect(fromFailure({ code: 'WHAT', message: 'x' }).code).toBe('INTERNAL')
  })

  test('retryAfter and unrecoverable of a failure become properties of the error (what the outbox reads)', () => {
    const throttled = fromFailure({ code: 'CONNECTION_FAILED', message: 'Event Mesh is throttling', retryAfter: 1500 })
    expect(throttled).toMatchObject({ code: 'CONNECTION_FAILED', retryAfter: 1500 })
    expect(throttled.unrecoverable).toBeUndefined()
    const refused = fromFailure({ code: 'REJECTED', message: 'HTTP 403', unrecoverable: true })
    expect(refused).toMatchObject({ code: 'REJECTED', unrecoverable: true })
    expect(refused.retryAfter).toBeUndefined()
    // a message text is never parsed for them
    const text = fromFailure({ code: 'CONNECTION_FAILED', message: 'retry after 5 ms (unrecoverable)' })
    expect([text.retryAfter, text.unrecoverable]).toEqual([undefined, undefined])
  })

  test('publish resolves to structured failures', async () => {
    const { NativeEngine } = native()
    const engine = new NativeEngine({ transport: 'local', name: 'unit' })
    await engine.close()
    const [f] = await engine.publish(['t'], ['{}'])
    expect(f).toEqual({ code: 'CLOSED', message: expect.stringMatching(/shut down/) })
  })
})
