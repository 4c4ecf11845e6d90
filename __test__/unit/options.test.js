'use strict'
// lib/options.js: the option helpers every kind shares (no broker needed).
const os = require('node:os')
const path = require('node:path')
const fs = require('node:fs')
const cds = require('@sap/cds')
const { str, number, bool, pem, boxPath, appId, canonical, nearest, COMMON } = require('../../lib/options')

describe('lib/options', () => {
  test('number and bool accept what environment variables give', () => {
    expect(number('n', '7')).toBe(7)
    expect(number('n', 7)).toBe(7)
    expect(number('n', undefined)).toBeUndefined()
    expect(() => number('n', 'soon')).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG', message: expect.stringMatching(/^n must be a non-negative whole number/) }))
    expect(() => number('n', 1.5)).toThrow(/whole number/)
    expect(bool('b', 'false')).toBe(false)
    expect(bool('b', true)).toBe(true)
    expect(() => bool('b', 'yes')).toThrow(/b must be true or false/)
  })

  test("str rejects other types, and '' only with nonEmpty", () => {
    expect(str('s', '')).toBe('')
    expect(() => str('s', '', { nonEmpty: true })).toThrow(/s must be a non-empty string/)
    expect(() => str('s', 5)).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG' }))
  })

  test('pem reads a relative path against cds.root, not the working directory', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pem-${process.pid}-`))
    fs.writeFileSync(path.join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nx\n')
    const root = cds.root
    const cwd = process.cwd()
    try {
      cds.root = dir
      process.chdir(os.tmpdir())
      expect(pem('ca', 'ca.pem')).toMatch(/^-----BEGIN CERTIFICATE-----/)
      expect(pem('ca', '-----BEGIN X-----')).toBe('-----BEGIN X-----')
      expect(() => pem('tls.ca', 'missing.pem')).toThrow(new RegExp(`tls.ca must be PEM text or the path of a PEM file; cannot read ${path.join(dir, 'missing.pem')}`))
    } finally {
      cds.root = root
      process.chdir(cwd)
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  test("boxPath resolves '~' as @sap/cds does: the account's home, not $HOME", () => {
    const home = process.env.HOME
    try {
      process.env.HOME = '/somewhere/else'
      expect(boxPath('~/.cds-msg-box')).toBe(path.join(os.userInfo().homedir, '.cds-msg-box'))
      expect(boxPath('~')).toBe(os.userInfo().homedir)
      expect(boxPath('/abs/~x')).toBe('/abs/~x')
    } finally {
      process.env.HOME = home
    }
  })

  test('appId is <name>/<first 4 of id> from cds.env.app, else VCAP_APPLICATION', () => {
    const app = cds.env.app
    const vcap = process.env.VCAP_APPLICATION
    try {
      cds.env.app = { name: 'shop', id: '12345678' }
      expect(appId()).toBe('shop/1234')
      cds.env.app = undefined
      process.env.VCAP_APPLICATION = JSON.stringify({ application_name: 'cf-app', application_id: 'abcdef' })
      expect(appId()).toBe('cf-app/abcd')
      delete process.env.VCAP_APPLICATION
      expect(appId()).toBe('CAP/0000')
    } finally {
      cds.env.app = app
      if (vcap === undefined) delete process.env.VCAP_APPLICATION
      else process.env.VCAP_APPLICATION = vcap
    }
  })

  test('canonical: keys lowercased by cds (environment variables) take the place of the known key', () => {
    const warnings = []
    const out = canonical({ maxAttempts: 3, maxattempts: '7', connection: { idletimeout: '5' } }, { ...COMMON, connection: { idleTimeout: true } }, w => warnings.push(w))
    expect(out.maxAttempts).toBe('7')
    expect(out.connection).toEqual({ idleTimeout: '5' })
    expect(warnings).toEqual([])
  })

  test('canonical: a misspelt key gets one warning naming the nearest known key', () => {
    const warnings = []
    canonical({ maxAttemps: 5, tls: { rejectUnauthorised: false }, someAppKey: 1 }, { ...COMMON, tls: { rejectUnauthorized: true } }, w => warnings.push(w))
    expect(warnings.sort()).toEqual([
      "option 'maxAttemps' is not known and is ignored; did you mean maxAttempts?",
      "option 'tls.rejectUnauthorised' is not known and is ignored; did you mean tls.rejectUnauthorized?"
    ])
    expect(nearest('someAppKey', Object.keys(COMMON))).toBeUndefined()
  })
})
