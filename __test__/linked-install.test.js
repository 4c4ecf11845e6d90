'use strict'
// cds-native-messaging installed as a symlink (npm link, "file:../pkg", a monorepo path): the
// package's own modules resolve @sap/cds from the clone's node_modules, a second instance. The
// services must still use the app's @sap/cds, so that consumption starts at its 'listening'.
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')

// The @sap/cds under test: this clone's, or the compatibility run's (scripts/test-cds10.sh).
const modules = process.env.CDS_MATRIX_MODULES || path.join(root, 'node_modules')
// The app's processes run without the compatibility run's module redirection: they are a plain app.
const appEnv = { ...process.env, NODE_ENV: 'test', CDS_CONFIG: '' }
delete appEnv.NODE_OPTIONS
delete appEnv.CDS_MATRIX_MODULES

/**
 * A CAP app whose node_modules/cds-native-messaging is a symlink to this clone and whose
 * node_modules/@sap/cds is its own copy (the clone keeps its own in its node_modules). The app lives
 * beside the node_modules of the @sap/cds under test, so the copy's dependencies resolve upwards.
 */
function linkedApp() {
  const base = process.env.CDS_MATRIX_MODULES ? path.join(path.dirname(modules), '.tmp-linked') : path.join(__dirname, '.tmp')
  fs.mkdirSync(base, { recursive: true })
  const app = fs.mkdtempSync(path.join(base, `linked-app-${process.pid}-`))
  const box = path.join(app, 'box')
  fs.mkdirSync(path.join(app, 'node_modules', '@sap'), { recursive: true })
  // @sap/cds and its plugin @sap/cds-fiori, which requires '@sap/cds' itself
  for (const pkg of ['cds', 'cds-fiori']) fs.cpSync(path.join(modules, '@sap', pkg), path.join(app, 'node_modules', '@sap', pkg), { recursive: true })
  fs.symlinkSync(root, path.join(app, 'node_modules', 'cds-native-messaging'), 'dir')
  fs.writeFileSync(
    path.join(app, 'package.json'),
    JSON.stringify({
      name: path.basename(app),
      private: true,
      dependencies: { '@sap/cds': '*', 'cds-native-messaging': '*' },
      cds: { requires: { messaging: { kind: 'native-file-based-messaging', file: box } } }
    })
  )
  fs.mkdirSync(path.join(app, 'srv'))
  fs.writeFileSync(path.join(app, 'srv', 'linked.cds'), 'service LinkedService { function ping() returns String; }\n')
  fs.writeFileSync(
    path.join(app, 'srv', 'linked.js'),
    `const cds = require('@sap/cds')
module.exports = class LinkedService extends cds.ApplicationService {
  async init() {
    const messaging = await cds.connect.to('messaging')
    messaging.on('linked.test', msg => console.log('received ' + msg.data.n))
    cds.once('listening', async () => {
      for (let n = 1; n <= 3; n++) await messaging.emit('linked.test', { n })
      console.log('emitted 3 from ' + require.resolve('@sap/cds'))
    })
    this.on('ping', () => 'pong')
    return super.init()
  }
}
`
  )
  return app
}

function serve(app) {
  const bin = path.join(app, 'node_modules', '@sap', 'cds', 'bin', 'serve.js')
  const child = spawn(process.execPath, [bin, 'all', '--port', '0'], {
    cwd: app,
    env: appEnv,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  child.stdout.on('data', d => (out += d))
  child.stderr.on('data', d => (out += d))
  const received = () => new Set(out.match(/^received \d+$/gm) || []).size
  return (async () => {
    const deadline = Date.now() + 30000
    while (received() < 3 && Date.now() < deadline && child.exitCode === null) await new Promise(r => setTimeout(r, 50))
    await new Promise(r => setTimeout(r, 200)) // late duplicates
    child.kill('SIGTERM')
    await new Promise(r => (child.exitCode === null ? child.on('exit', r) : r()))
    return { received: received(), out }
  })()
}

const escape = s => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

describe('installed as a symlink (npm link)', () => {
  let app
  beforeAll(() => {
    app = linkedApp()
  })
  afterAll(() => fs.rmSync(app, { recursive: true, force: true }))

  test("the services use the app's @sap/cds: 3 of 3 received, no warning", async () => {
    expect(fs.lstatSync(path.join(app, 'node_modules', 'cds-native-messaging')).isSymbolicLink()).toBe(true)
    const { received, out } = await serve(app)
    expect(out).toMatch(new RegExp(`emitted 3 from ${escape(path.join(app, 'node_modules', '@sap', 'cds'))}`))
    expect({ received, out }).toMatchObject({ received: 3 })
    expect(out).not.toMatch(/two instances of @sap\/cds/)
  }, 60000)

  test('a second @sap/cds loaded in the process: one warning that names both and the fix', () => {
    // A script of the app that (through some other dependency) also loads the clone's @sap/cds.
    const second = path.join(root, 'node_modules', '@sap', 'cds')
    fs.writeFileSync(
      path.join(app, 'two.js'),
      `const cds = require('@sap/cds')
require(${JSON.stringify(second)})
;(async () => {
  const a = await cds.connect.to('messaging')
  const b = await cds.connect.to('other', { kind: 'native-local-messaging' })
  console.log('same cds: ' + (a instanceof cds.MessagingService && b instanceof cds.MessagingService))
  await a.disconnect()
  await b.disconnect()
  process.exit(0)
})().catch(e => { console.error(e); process.exit(1) })
`
    )
    const r = spawnSync(process.execPath, ['two.js'], { cwd: app, env: appEnv, encoding: 'utf8', timeout: 30000 })
    const out = r.stdout + r.stderr
    expect({ status: r.status, out }).toMatchObject({ status: 0 })
    expect(out).toContain('same cds: true')
    const warnings = out.split('\n').filter(l => /two instances of @sap\/cds/.test(l))
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toContain(second.toLowerCase())
    expect(warnings[0]).toContain(path.join(app, 'node_modules', '@sap', 'cds').toLowerCase())
    expect(warnings[0]).toMatch(/npm i cds-native-messaging -w <app>/)
  })
})
