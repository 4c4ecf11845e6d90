'use strict'
// Loads a CAP app's configuration the way the app itself does: its own @sap/cds (resolved from the
// app folder), its profiles, `cds bind`, default-env.json and VCAP_SERVICES; and finds its native
// messaging services with the options their kind maps them to.
const fs = require('node:fs')
const path = require('node:path')
const { NativeMessagingError, codes } = require('../errors')

const OWN_SRV = path.join(__dirname, '..', '..', 'srv')

/**
 * @param {{ cwd?: string, profile?: string }} opts
 * @returns {{ cds: any, root: string, services: Array<object>, hadVcap: boolean }}
 */
function loadApp({ cwd = process.cwd(), profile } = {}) {
  const root = path.resolve(cwd)
  if (profile) process.env.CDS_ENV = profile
  const hadVcap = 'VCAP_SERVICES' in process.env
  let cdsPath
  try {
    cdsPath = require.resolve('@sap/cds', { paths: [root] })
  } catch {
    throw new NativeMessagingError(codes.INVALID_CONFIG, `no @sap/cds found from ${root}: run the command in the folder of a CAP app (npm install there first)`)
  }
  const cds = require(cdsPath)
  if (path.resolve(cds.root) !== root) cds.root = root
  const env = cds.env
  const services = []
  for (const [name, conf] of Object.entries(env.requires || {})) {
    if (!conf || typeof conf !== 'object' || !isNative(conf)) continue
    services.push(describe(cds, name, conf, { root, hadVcap }))
  }
  return { cds, root, services, hadVcap }
}

function isNative(conf) {
  return /^native-[a-z-]+-messaging$/.test(conf.kind || '') || /cds-native-messaging\/srv\//.test(conf.impl || '')
}

/** The kind's file under srv/: `file-based`, `redis`, `mqtt`, `amqp`, `enterprise`, `enterprise-messaging-shared`, … */
function implFile(conf) {
  const fromImpl = /srv\/([a-z-]+)\.js$/.exec(conf.impl || '')
  if (fromImpl) return fromImpl[1]
  const m = /^native-([a-z-]+)$/.exec(conf.kind || '')
  if (!m) return null
  // `native-event-mesh[-shared]` are the enterprise-messaging kinds under their new name
  return m[1].replace(/^event-mesh/, 'enterprise-messaging')
}

/** `file-based`, `redis`, `mqtt`, `amqp`, `local`, `composite` (of the kind's own name). */
function kindOf(conf) {
  const m = /^native-([a-z-]+)-messaging$/.exec(conf.kind || '') || /srv\/([a-z-]+)-messaging/.exec(conf.impl || '')
  return m ? m[1] : 'unknown'
}

function implClass(conf) {
  return require(path.join(OWN_SRV, `${implFile(conf)}.js`))
}

/** What the CLI talks to: the kind's transport (`file` → `file-based`), so that the Event Mesh kinds over AMQP are `amqp`. */
const TRANSPORT_KIND = { file: 'file-based', amqp: 'amqp', mqtt: 'mqtt', redis: 'redis', local: 'local', rest: 'rest' }

function describe(cds, name, conf, ctx) {
  const kind = kindOf(conf)
  const s = { name, kind, conf, origin: origin(cds, name, conf, ctx), options: null, error: null }
  try {
    const Cls = implClass(conf)
    const srv = Object.create(Cls.prototype)
    Object.assign(srv, { name, options: conf, LOG: quietLog })
    s.options = kind === 'composite' || kind === 'local' ? {} : srv._nativeOptions(() => {})
    s.kind = TRANSPORT_KIND[s.options.transport] ?? kind
    s.impl = Cls
  } catch (e) {
    s.error = e
  }
  return s
}

const quietLog = { _warn: false, _info: false, _debug: false, warn() {}, info() {}, debug() {}, error() {} }

/** Where the configuration and the credentials of service `name` came from. */
function origin(cds, name, conf, { root, hadVcap }) {
  const config = []
  for (const src of cds.env._sources || []) {
    if (typeof src !== 'string') continue
    if (src === 'process.env.VCAP_SERVICES') continue
    const json = readJson(src)
    const req = (path.basename(src) === 'package.json' ? json?.cds : json)?.requires
    if (req && mentions(req, name)) config.push(path.relative(root, src) || src)
  }
  const envVars = Object.keys(process.env).filter(k => k.toUpperCase().startsWith(`CDS_REQUIRES_${name.toUpperCase().replace(/-/g, '_')}`))
  if (envVars.length) config.push(`environment (${envVars.join(', ')})`)
  if (process.env.CDS_CONFIG) config.push('CDS_CONFIG')
  if (process.env.CDS_ENV) config.push(`profile(s) ${process.env.CDS_ENV}`)

  let credentials = 'none: defaults of the kind'
  if (conf.binding) credentials = `cds bind (${conf.binding.type || 'binding'}${conf.binding.instance ? ` instance '${conf.binding.instance}'` : ''})`
  else if (conf.credentials && process.env.VCAP_SERVICES) {
    const vcap = vcapEntryFor(process.env.VCAP_SERVICES, conf.credentials)
    if (vcap) {
      const file = !hadVcap && fs.existsSync(path.join(root, 'default-env.json')) ? 'default-env.json' : 'VCAP_SERVICES'
      credentials = `${file} (service '${vcap.name}', label '${vcap.label}')`
    }
  }
  if (credentials.startsWith('none') && conf.credentials && Object.keys(conf.credentials).length) credentials = `cds.requires.${name}.credentials`
  else if (credentials.startsWith('none') && conf.url) credentials = `cds.requires.${name}.url`
  return { config: config.length ? config : ['defaults of the kind'], credentials }
}

function mentions(req, name) {
  if (name in req) return true
  return Object.keys(req).some(k => k.startsWith('[') && req[k] && typeof req[k] === 'object' && name in req[k])
}

function vcapEntryFor(text, credentials) {
  let vcaps
  try {
    vcaps = JSON.parse(text)
  } catch {
    return null
  }
  const want = JSON.stringify(credentials)
  for (const [label, list] of Object.entries(vcaps)) {
    for (const e of Array.isArray(list) ? list : []) if (JSON.stringify(e.credentials) === want) return { label, name: e.name }
  }
  return null
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch {
    return null
  }
}

/** The services a command works on: the named one, or all. */
function pick(app, name) {
  if (!name) {
    if (!app.services.length)
      throw new NativeMessagingError(codes.INVALID_CONFIG, `no native messaging service in cds.requires of ${app.root} (kinds native-*-messaging)`)
    return app.services
  }
  const s = app.services.find(x => x.name === name)
  if (!s) {
    const known = app.services.map(x => x.name).join(', ') || 'none'
    throw new NativeMessagingError(codes.INVALID_CONFIG, `no native messaging service '${name}' in cds.requires (found: ${known})`)
  }
  return [s]
}

/** The one service a command talks through: `--service`, else the only one, else `messaging`. */
function one(app, name) {
  if (name) return pick(app, name)[0]
  const all = pick(app)
  if (all.length === 1) return all[0]
  const m = all.find(s => s.name === 'messaging')
  if (m) return m
  throw new NativeMessagingError(codes.INVALID_CONFIG, `several messaging services (${all.map(s => s.name).join(', ')}): choose one with --service`)
}

module.exports = { loadApp, pick, one, kindOf }
