'use strict'
// rediss:// with a private CA (as BTP's credentials.tls.server_ca) against a private TLS redis-server
// with a password. Certificates are made with openssl for this run.
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { createClient } = require('redis')
const { freePort } = require('./helpers')
const { killPeers, startPeer, runPeer, tmpDir, until } = require('./redis-helpers')

function makeCerts(dir) {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' })
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=test-ca', '-keyout', 'ca.key', '-out', 'ca.pem')
  fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  run('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', 'server.key', '-out', 'server.csr')
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'ext.cnf', '-out', 'server.pem')
  return fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8')
}

describe('native-redis-messaging over TLS (rediss://, CA from credentials.tls.server_ca)', () => {
  let server
  let port
  let ca
  const password = 'tls-secret-123'
  beforeAll(async () => {
    const dir = tmpDir('redis-tls')
    ca = makeCerts(dir)
    port = await freePort()
    server = spawn(
      'redis-server',
      ['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--requirepass', password,
        '--tls-cert-file', path.join(dir, 'server.pem'), '--tls-key-file', path.join(dir, 'server.key'),
        '--tls-ca-cert-file', path.join(dir, 'ca.pem'), '--tls-auth-clients', 'no'],
      { stdio: 'ignore' }
    )
    const net = require('node:net')
    await until(
      () => new Promise(r => net.connect({ host: '127.0.0.1', port }).once('connect', function () { this.destroy(); r(true) }).once('error', () => r(false))),
      10000,
      'the TLS redis-server'
    )
  })
  afterEach(killPeers)
  afterAll(() => server?.kill('SIGTERM'))

  const bound = extra => ({
    kind: 'native-redis-messaging',
    credentials: { uri: `rediss://user:${password}@127.0.0.1:${port}`, tls: { server_ca: ca } },
    ...extra
  })

  test('pub/sub and streams work over TLS with the binding CA and password', async () => {
    for (const mode of ['pubsub', 'streams']) {
      const cfg = bound({ mode, streamPrefix: `tls-${process.pid}:`, queue: `tls-${process.pid}` })
      const file = path.join(tmpDir(`redis-tls-${mode}`), 'got.jsonl')
      const receiver = startPeer('receive', cfg, { topic: 'secure', n: 20, record: file })
      await receiver.ready
      const raw = createClient({ url: `rediss://:${password}@127.0.0.1:${port}`, socket: { tls: true, ca } })
      await raw.connect()
      await until(
        async () =>
          mode === 'pubsub'
            ? (await raw.pubSubNumSub('secure')).secure > 0
            : (await raw.xInfoGroups(`${cfg.streamPrefix}secure`).catch(() => [])).length > 0,
        10000,
        'the subscription'
      )
      await raw.quit()
      await runPeer('emit', cfg, { topic: 'secure', n: 20 })
      const got = await receiver.done
      expect(got.received).toBe(20)
      expect(got.output).not.toContain(password)
    }
  })

  test('without the CA the server is not trusted: emit fails with CONNECTION_FAILED, no password in the error', async () => {
    const cfg = { kind: 'native-redis-messaging', credentials: { uri: `rediss://:${password}@127.0.0.1:${port}` }, connectTimeout: 1000 }
    const emitter = startPeer('emit', cfg, { topic: 'secure', n: 1 })
    const err = await emitter.done.catch(e => e)
    expect(err.message).toMatch(/CONNECTION_FAILED|Redis at rediss:\/\/127\.0\.0\.1:\d+ is not reachable/)
    expect(err.message).not.toContain(password)
    expect(err.message).toMatch(/certificate|UnknownIssuer/i)
  })
})

// One TLS layer (src/transport/support/tls.rs) for Redis, MQTT and AMQP: a bad CA PEM is the same
// INVALID_CONFIG with the same message (the option named as each kind names it), never a crash.
describe('a bad CA PEM fails like the AMQP and MQTT kinds', () => {
  const cds = require('@sap/cds')
  const BAD = '-----BEGIN CERTIFICATE-----\nthis is not base64!\n-----END CERTIFICATE-----\n'
  const EMPTY = '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' // PEM, but no certificate in it

  test.each([
    ['not valid PEM', BAD, /^ca is not valid PEM/],
    ['no certificate in the PEM', EMPTY, /^ca contains no PEM certificate \(-----BEGIN CERTIFICATE-----\)/]
  ])('%s → INVALID_CONFIG at connect, with the message of the shared TLS layer', async (_, pem, shape) => {
    const redis = await cds.connect.to({ kind: 'native-redis-messaging', credentials: { uri: 'rediss://:pw-tls-1@127.0.0.1:1', tls: { server_ca: pem } } }).catch(e => e)
    const mqtt = await cds.connect.to({ kind: 'native-mqtt-messaging', url: 'mqtts://127.0.0.1:1', ca: pem }).catch(e => e)
    expect(redis).toBeInstanceOf(Error)
    expect(redis.code).toBe('INVALID_CONFIG')
    expect(redis.message).toMatch(shape)
    expect(redis.message).not.toContain('pw-tls-1')
    expect(mqtt.code).toBe('INVALID_CONFIG')
    expect(redis.message).toBe(mqtt.message)
  })
})
