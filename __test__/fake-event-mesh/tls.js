'use strict'
// Throw-away CAs and certificates made with `openssl` at test time: a server certificate for
// 127.0.0.1 / localhost, and client certificates for mutual TLS (`ca.client(cn)`).
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

function throwAwayCa(name = 'fake-event-mesh-test-ca') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-em-ca-'))
  const f = file => path.join(dir, file)
  const run = args => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
  run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', f('ca.key'), '-out', f('ca.pem')])
  const issue = (stem, subject, ext) => {
    run(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', subject, '-keyout', f(`${stem}.key`), '-out', f(`${stem}.csr`)])
    fs.writeFileSync(f(`${stem}.cnf`), ext)
    run(['x509', '-req', '-in', f(`${stem}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f(`${stem}.cnf`), '-out', f(`${stem}.pem`)])
    return { cert: fs.readFileSync(f(`${stem}.pem`), 'utf8'), key: fs.readFileSync(f(`${stem}.key`), 'utf8') }
  }
  const server = issue('server', '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n')
  let clients = 0
  return {
    dir,
    caFile: f('ca.pem'),
    ca: fs.readFileSync(f('ca.pem'), 'utf8'),
    cert: server.cert,
    key: server.key,
    /** A client certificate (PEM `cert` and `key`) with common name `cn`, signed by this CA. */
    client: cn => issue(`client${++clients}`, `/CN=${cn}`, 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n'),
    remove: () => fs.rmSync(dir, { recursive: true, force: true })
  }
}

module.exports = { throwAwayCa }
