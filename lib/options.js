'use strict'
// Option helpers shared by every kind (srv/<kind>.js): typed readers that accept what cds.env gives
// (strings from environment variables), PEM text or files relative to cds.root, the app id as
// @sap/cds derives it, the default box path as @sap/cds resolves it, and case-insensitive option
// keys with a warning for a misspelt one. Ranges and enumerations are checked in Rust, not here.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { cds } = require('./cds')
const { NativeMessagingError, codes } = require('./errors')

const invalid = (message, cause) => new NativeMessagingError(codes.INVALID_CONFIG, message, cause ? { cause } : undefined)

/** A string option (`undefined` when absent); `nonEmpty` also rejects `''`. */
function str(name, v, { nonEmpty = false } = {}) {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string' || (nonEmpty && !v.trim()))
    throw invalid(`${name} must be a ${nonEmpty ? 'non-empty ' : ''}string, got ${JSON.stringify(v)}`)
  return v
}

/** A non-negative whole number; numeric strings (values from environment variables) are accepted. */
function number(name, v) {
  if (v === undefined || v === null) return undefined
  if (typeof v === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(v)) v = Number(v)
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || !Number.isInteger(v))
    throw invalid(`${name} must be a non-negative whole number, got ${JSON.stringify(v)}`)
  return v
}

/** A boolean; `'true'` / `'false'` (values from environment variables) are accepted. */
function bool(name, v) {
  if (v === undefined || v === null) return undefined
  if (v === 'true' || v === 'false') return v === 'true'
  if (typeof v !== 'boolean') throw invalid(`${name} must be true or false, got ${JSON.stringify(v)}`)
  return v
}

/** PEM text, or the path of a PEM file (relative paths are relative to `cds.root`). */
function pem(name, v) {
  const s = str(name, v)
  if (s === undefined || s.includes('-----BEGIN')) return s
  const file = path.resolve(cds.root, s)
  try {
    return fs.readFileSync(file, 'utf8')
  } catch (e) {
    throw invalid(`${name} must be PEM text or the path of a PEM file; cannot read ${file}: ${e.message}`, e)
  }
}

/** `~` and `~/…` expanded exactly as @sap/cds's file-based-messaging does (the OS account's home, not `$HOME`). */
function boxPath(f) {
  return path.resolve(f.replace(/^~(?=$|\/)/, () => os.userInfo().homedir))
}

/** The name in the app's package.json (`undefined` without one). */
function packageName() {
  try {
    return JSON.parse(fs.readFileSync(path.join(cds.root, 'package.json'), 'utf8')).name || undefined
  } catch {
    return undefined
  }
}

/**
 * @sap/cds's `$appId`: `<app name>/<first 4 characters of the app id>` from `cds.env.app`, else
 * `VCAP_APPLICATION`; `packageFallback` lets the package.json name stand in for a missing app name.
 */
function appId({ packageFallback = false } = {}) {
  let { name, id } = cds.env.app || {}
  if ((!name || !id) && process.env.VCAP_APPLICATION) {
    try {
      const v = JSON.parse(process.env.VCAP_APPLICATION)
      name = name || v.application_name
      id = id || v.application_id
    } catch {
      /* not on Cloud Foundry */
    }
  }
  if (!name && packageFallback) name = packageName()
  return `${name || 'CAP'}/${String(id || '00000000').substring(0, 4)}`
}

/** Edit distance of two strings (Levenshtein), for "did you mean". */
function distance(a, b) {
  let row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const next = [i]
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    row = next
  }
  return row[b.length]
}

/** The known key nearest to `key` (case-insensitive), if it is close enough to be a typo. */
function nearest(key, known) {
  const k = key.toLowerCase()
  let best
  let bestD = Infinity
  for (const c of known) {
    const d = distance(k, c.toLowerCase())
    if (d < bestD) [best, bestD] = [c, d]
  }
  return bestD <= Math.max(2, Math.floor(k.length / 4)) ? best : undefined
}

/**
 * Options with their keys spelt as `schema` spells them. cds lowercases keys that come from
 * environment variables (`CDS_REQUIRES_MESSAGING_MAXATTEMPTS` arrives as `maxattempts`): such a key
 * takes the place of the known key (it is the later, overriding source). A key that is not known
 * but close to a known one is reported through `warn` ("did you mean"); other keys are kept as they
 * are (cds and the app may add their own). `schema` maps each key to `true` or to the schema of
 * its nested object; `credentials` (a service binding) is taken as it is.
 */
function canonical(options, schema, warn, where = '') {
  if (!options || typeof options !== 'object' || Array.isArray(options)) return options
  const byLower = new Map(Object.keys(schema).map(k => [k.toLowerCase(), k]))
  const nested = (k, v) => (typeof schema[k] === 'object' ? canonical(v, schema[k], warn, `${where}${k}.`) : v)
  const out = {}
  for (const [key, value] of Object.entries(options)) if (Object.hasOwn(schema, key)) out[key] = nested(key, value)
  for (const [key, value] of Object.entries(options)) {
    if (Object.hasOwn(schema, key)) continue
    const known = byLower.get(key.toLowerCase())
    if (known) {
      out[known] = nested(known, value)
      continue
    }
    const near = nearest(key, Object.keys(schema))
    if (near) warn(`option '${where}${key}' is not known and is ignored; did you mean ${where}${near}?`)
    out[key] = value
  }
  return out
}

/** Options of every messaging service that cds itself reads, plus the common engine options. */
const COMMON = Object.freeze({
  kind: true,
  impl: true,
  model: true,
  vcap: true,
  credentials: true,
  outbox: true,
  outboxed: true,
  inbox: true,
  inboxed: true,
  publishPrefix: true,
  subscribePrefix: true,
  format: true,
  structured: true,
  forceListening: true,
  webhook: true,
  queue: true,
  maxAttempts: true,
  retryDelay: true,
  maxRetryDelay: true,
  maxInFlight: true,
  maxBatch: true,
  handlerTimeout: true
})

module.exports = { str, number, bool, pem, boxPath, packageName, appId, canonical, nearest, COMMON }
