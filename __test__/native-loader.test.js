'use strict'
// Without a loadable addon (another platform, or the platform package missing) the error is one
// paragraph: this platform, the supported ones, how to build from source.
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const root = path.resolve(__dirname, '..')

/** Loads the addon through lib/native.js in a child process; returns the error's code and message. */
function load(cwd, prelude = '') {
  const script = `${prelude}
try { require(${JSON.stringify(path.join(cwd, 'lib', 'native.js'))}).native(); console.log(JSON.stringify({ loaded: true })) }
catch (e) { console.log(JSON.stringify({ code: e.code, name: e.name, message: e.message })) }`
  const r = spawnSync(process.execPath, ['-e', script], { cwd, encoding: 'utf8', env: { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: '' } })
  expect(r.stderr).toBe('')
  return JSON.parse(r.stdout.trim().split('\n').pop())
}

test('on an unsupported platform: one paragraph naming it, the supported ones and the source build', () => {
  const stub = `Object.defineProperty(process, 'platform', { value: 'freebsd' }); Object.defineProperty(process, 'arch', { value: 'riscv64' })`
  const e = load(root, stub)
  expect(e).toMatchObject({ code: 'INTERNAL', name: 'NativeMessagingError' })
  expect(e.message).not.toContain('\n')
  expect(e.message).toMatch(/^cds-native-messaging cannot load its native addon on freebsd-riscv64: there is no prebuilt addon for freebsd-riscv64\. Prebuilt addons exist for linux-x64-gnu \(Linux x64 with glibc 2\.17 or newer\)\. To build it from source: install Rust/)
  expect(e.message).toMatch(/run `npm install` in the clone .*NAPI_RS_NATIVE_LIBRARY_PATH/)
  expect(e.message).not.toMatch(/Reinstall/)
})

test('on a supported platform without the binary: names the missing platform package', () => {
  // A copy of the package as installed, without native/*.node and without the platform package.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cnm-loader-'))
  try {
    for (const f of ['package.json', 'index.js', 'lib', 'native/native.js']) fs.cpSync(path.join(root, f), path.join(dir, f), { recursive: true })
    const e = load(dir)
    expect(e).toMatchObject({ code: 'INTERNAL' })
    expect(e.message).not.toContain('\n')
    expect(e.message).toMatch(/on linux-x64-gnu: its package cds-native-messaging-linux-x64-gnu is not installed or does not load \(.*\); install it with `npm install cds-native-messaging-linux-x64-gnu@0\.1\.0`/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
