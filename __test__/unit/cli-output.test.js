'use strict'
// lib/cli/output.js: the CLI's parsing helpers raise NativeMessagingErrors with a stable code.
const { duration } = require('../../lib/cli/output')
const { NativeMessagingError, codes } = require('../../lib/errors')

test('--older-than: a duration in ms, s, m, h or d', () => {
  expect(duration('30s')).toBe(30000)
  expect(duration('2h')).toBe(7200000)
  expect(duration(undefined)).toBeUndefined()
})

test('--older-than: a malformed duration is INVALID_CONFIG with what to write instead', () => {
  let err
  try {
    duration('soon')
  } catch (e) {
    err = e
  }
  expect(err).toBeInstanceOf(NativeMessagingError)
  expect(err.code).toBe(codes.INVALID_CONFIG)
  expect(err.message).toMatch(/e\.g\. 30s/)
})
