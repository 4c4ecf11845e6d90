'use strict'
// native-amqp-messaging over ws:// with OAuth2 bearer tokens: a FAKE token endpoint and a small
// WebSocket gateway (__test__/ws-gateway.js) in front of the real RabbitMQ AMQP 1.0 listener,
// across real processes.
const { URL, RUN, ensureRabbit, deleteQueues, spawnPeer, range } = require('./amqp-helpers')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { tmpDir } = require('./helpers')
const { startGateway } = require('./ws-gateway')

const queues = []
const topic = name => `${RUN}.ws.${name}`

beforeAll(ensureRabbit, 150000)
afterAll(() => deleteQueues(queues))

/** Creates and binds the queue over plain TCP (RabbitMQ provisioning cannot go through the gateway). */
async function provision(name) {
  const queue = `${RUN}-ws-${name}`
  queues.push(queue)
  const first = spawnPeer('receive', { kind: 'native-amqp-messaging', url: URL, queue: { name: queue } }, { n: 0, topic: topic(name) })
  await first.ready
  await first.done
  return queue
}

const viaGateway = (gw, queue) => ({
  kind: 'native-amqp-messaging',
  url: gw.wsUrl.replace('://', '://guest:guest@'),
  oauth: gw.oa2,
  queue: { name: queue, provision: false },
  sendTimeout: 60000,
  connection: { reconnectDelay: 100, maxReconnectDelay: 1000 }
})

describe('AMQP 1.0 over WebSocket with OAuth2 (RabbitMQ behind a gateway)', () => {
  test('5,000 messages across two processes over ws://, none lost', async () => {
    const gw = await startGateway()
    try {
      const queue = await provision('bulk')
      const c = viaGateway(gw, queue)
      const receiver = spawnPeer('receive', c, { n: 5000, topic: topic('bulk'), readyAtStart: true })
      await receiver.ready
      const sent = await spawnPeer('emit', c, { n: 5000, topic: topic('bulk'), chunk: 1000 }).done
      expect(sent).toMatchObject({ emitted: 5000, failed: 0 })
      const got = await receiver.done
      expect(got.ids).toEqual(range(0, 5000))
      expect(got.dup).toBe(0)
      // One token per process (cached), every connection upgraded with a bearer.
      expect(gw.stats.tokenRequests).toBe(2)
      expect(gw.stats.upgrades).toBeGreaterThanOrEqual(2)
      expect(gw.stats.refused).toBe(0)
      console.log(`ws:// 5,000 messages: emitted in ${sent.ms} ms, received in ${got.ms} ms; ${gw.stats.upgrades} upgrades`)
    } finally {
      await gw.close()
    }
  }, 90000)

  test('the gateway closes every socket at token expiry mid-stream: reconnect with a new token, none lost', async () => {
    const gw = await startGateway({ expiresIn: 3, dropOnExpiry: true })
    try {
      const queue = await provision('expiry')
      const c = viaGateway(gw, queue)
      const n = 2000
      const receiver = spawnPeer('receive', c, { n, topic: topic('expiry'), readyAtStart: true, idleMs: 5000 }, { timeout: 80000 })
      await receiver.ready
      const sent = await spawnPeer('emit', c, { n, topic: topic('expiry'), chunk: 100, pauseMs: 300 }, { timeout: 80000 }).done
      const got = await receiver.done
      expect(sent).toMatchObject({ emitted: n, failed: 0 })
      expect(got.ids).toEqual(range(0, n))
      console.log(
        `token expiry every 3 s: ${n} emitted, ${got.received} distinct received, ${got.dup} duplicate(s); ` +
          `${gw.stats.drops} socket(s) closed at expiry, ${gw.stats.tokenRequests} token requests, ${gw.stats.tokensSeen.size} tokens used, ${gw.stats.refused} upgrades refused`
      )
      expect(gw.stats.drops).toBeGreaterThanOrEqual(2)
      expect(gw.stats.tokensSeen.size).toBeGreaterThanOrEqual(3)
    } finally {
      await gw.close()
    }
  }, 120000)

  test('a token the gateway refuses (401) is dropped: one new token, one more upgrade, the emits go through', async () => {
    const gw = await startGateway({ revokeFirst: 1 })
    try {
      const queue = await provision('revoked')
      const sent = await spawnPeer('emit', viaGateway(gw, queue), { n: 10, topic: topic('revoked') }).done
      expect(sent).toMatchObject({ emitted: 10, failed: 0 })
      expect(gw.stats).toMatchObject({ revoked: 1, refused: 1, tokenRequests: 2, upgrades: 1 })
    } finally {
      await gw.close()
    }
  }, 60000)

  test('wss:// and an https token endpoint with a test CA: trusted through NODE_EXTRA_CA_CERTS, as Node does', async () => {
    const dir = tmpDir('wss')
    const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' })
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=cnm ws test CA')
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'leaf.csr', '-subj', '/CN=localhost')
    fs.writeFileSync(path.join(dir, 'ext'), 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n')
    openssl('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'cert.pem', '-days', '1', '-extfile', 'ext')
    const gw = await startGateway({ tls: { key: fs.readFileSync(path.join(dir, 'key.pem')), cert: fs.readFileSync(path.join(dir, 'cert.pem')) } })
    const before = process.env.NODE_EXTRA_CA_CERTS
    try {
      const queue = await provision('wss')
      const c = viaGateway(gw, queue)
      const untrusted = await spawnPeer('emit', { ...c, sendTimeout: 3000 }, { n: 2, topic: topic('wss') }).done
      expect(untrusted).toMatchObject({ emitted: 0, failed: 2, codes: { TOKEN_FAILED: 2 } })
      expect(untrusted.output).toMatch(/TLS handshake with https:\/\/localhost:\d+\/oauth\/token failed/)
      process.env.NODE_EXTRA_CA_CERTS = path.join(dir, 'ca.pem')
      const receiver = spawnPeer('receive', c, { n: 20, topic: topic('wss'), readyAtStart: true })
      await receiver.ready
      const sent = await spawnPeer('emit', c, { n: 20, topic: topic('wss') }).done
      expect(sent).toMatchObject({ emitted: 20, failed: 0 })
      expect((await receiver.done).ids).toEqual(range(0, 20))
      expect(gw.stats.upgrades).toBeGreaterThanOrEqual(2)
    } finally {
      if (before === undefined) delete process.env.NODE_EXTRA_CA_CERTS
      else process.env.NODE_EXTRA_CA_CERTS = before
      await gw.close()
    }
  }, 60000)

  test('wrong client secret: emits fail with TOKEN_FAILED and a message that says what to check, no secret', async () => {
    const gw = await startGateway()
    try {
      const c = { ...viaGateway(gw, `${RUN}-ws-none`), oauth: { ...gw.oa2, clientsecret: 'wrong-secret-value' }, sendTimeout: 3000 }
      const sent = await spawnPeer('emit', c, { n: 3, topic: topic('none') }).done
      expect(sent).toMatchObject({ emitted: 0, failed: 3, codes: { TOKEN_FAILED: 3 } })
      expect(sent.output).toMatch(/clientsecret/)
      expect(sent.output).not.toMatch(/wrong-secret-value/)
      expect(gw.stats.upgrades).toBe(0)
    } finally {
      await gw.close()
    }
  }, 60000)
})
