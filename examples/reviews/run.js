#!/usr/bin/env node
// `npm start`: two separate CAP processes over one native file box. The receiver is a CAP server
// (`cds serve`); the emitter is a short-lived CAP script that exits right after its last emit.
'use strict'
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const N = Number(process.env.REVIEWS || 20)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cds-native-demo-'))
const box = path.join(dir, 'box')
const env = { ...process.env, CDS_CONFIG: JSON.stringify({ requires: { messaging: { file: box } } }) }
const cdsServe = require.resolve('@sap/cds/bin/serve.js', { paths: [path.join(__dirname, 'receiver')] })

function start(name, args, cwd, onLine) {
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let buf = ''
  const feed = d => {
    buf += d
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      onLine(line)
    }
  }
  child.stdout.on('data', feed)
  child.stderr.on('data', feed)
  child.done = new Promise(resolve => child.on('exit', code => resolve(code)))
  return child
}

async function main() {
  console.log(`demo: box file ${box}`)
  const received = new Map()
  let listening
  const ready = new Promise(r => (listening = r))
  const receiver = start('receiver', [cdsServe, 'all', '--port', '0'], path.join(__dirname, 'receiver'), line => {
    if (/server listening/.test(line)) listening()
    const m = /^received (\S+)/.exec(line)
    if (m) {
      received.set(m[1], (received.get(m[1]) || 0) + 1)
      console.log(`  [receiver] ${line}`)
    } else if (/error|warn/i.test(line)) console.log(`  [receiver] ${line}`)
  })
  await Promise.race([ready, receiver.done.then(code => Promise.reject(new Error(`receiver exited with ${code}`)))])

  let emitted = 0
  const t0 = Date.now()
  const emitter = start('emitter', ['main.js', String(N)], path.join(__dirname, 'emitter'), line => {
    if (line.startsWith('emitted')) emitted++
    console.log(`  [emitter]  ${line}`)
  })
  const code = await emitter.done
  if (code !== 0) throw new Error(`emitter exited with ${code}`)

  const deadline = Date.now() + 15000
  while (received.size < N && Date.now() < deadline) await new Promise(r => setTimeout(r, 20))
  const ms = Date.now() - t0
  await new Promise(r => setTimeout(r, 300)) // would show late duplicates
  receiver.kill('SIGTERM')
  await receiver.done

  const duplicates = [...received.values()].reduce((a, c) => a + c - 1, 0)
  const lost = N - received.size
  console.log(
    `demo: emitted ${emitted}, received ${received.size}, lost ${lost}, duplicates ${duplicates}, ` +
      `${ms} ms from first emit to last receive (two processes, one native file box)`
  )
  fs.rmSync(dir, { recursive: true, force: true })
  process.exit(lost === 0 && duplicates === 0 && emitted === N ? 0 : 1)
}

main().catch(e => {
  console.error(`demo failed: ${e.message}`)
  process.exit(1)
})
