'use strict'
// The file box under faults (issue #14): a container restart (the process comes back with the same
// host name and pid 1), locks left by such a predecessor, bytes that are not UTF-8, absurd capacities.
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { tmpDir, peer, until } = require('./helpers')

const app = path.join(__dirname, 'apps', 'box-peer')
const ours = (file, extra = {}) => ({ kind: 'native-file-based-messaging', file, interval: 200, ...extra })
const range = (from, n) => Array.from({ length: n }, (_, k) => from + k)
const claimLines = file => fs.readFileSync(file, 'utf8').split('\n').filter(l => l.startsWith('~claim/'))
const messageLines = file => fs.readFileSync(file, 'utf8').split('\n').filter(l => /^\s*\S+ \{/.test(l))

/**
 * Runs box-peer's `peer.js` as pid 1 of a new pid namespace (`unshare --pid --fork --mount-proc`):
 * what a container restarted on the same host looks like. Same host name as this process.
 */
function inContainer(role, requires, args) {
  const child = spawn('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, path.join(app, 'peer.js'), role, JSON.stringify(args)], {
    cwd: app,
    env: { ...process.env, CDS_CONFIG: JSON.stringify({ requires: { messaging: requires } }), NODE_ENV: 'test' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const run = { child, out: '', err: '', got: new Set() }
  child.stdout.on('data', d => {
    run.out += d
    for (const m of String(d).matchAll(/^got (\d+)$/gm)) run.got.add(Number(m[1]))
  })
  child.stderr.on('data', d => (run.err += d))
  run.exited = new Promise(resolve => child.on('exit', (code, signal) => resolve({ code, signal })))
  /** The host pid of the namespace's pid 1 (the node process). */
  run.pid1 = () => {
    const children = fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim()
    return Number(children.split(/\s+/)[0])
  }
  run.result = async () => {
    const { code } = await run.exited
    const last = run.out.trim().split('\n').filter(l => l.startsWith('{')).pop()
    if (code !== 0 || !last) throw new Error(`peer ${role} in a pid namespace exited with ${code}\nstdout:\n${run.out}\nstderr:\n${run.err}`)
    return JSON.parse(last)
  }
  return run
}

describe('file box: a container restarted with the same host name and pid (issue #14, defects 1 and 8)', () => {
  test('SIGKILL of the pid-1 receiver after 300 of 2,000, restart it as pid 1, then an ordinary receiver: all received, 0 stuck', async () => {
    const box = path.join(tmpDir('container-restart'), 'box')
    const sent = await peer('emit', ours(box), { n: 2000 })
    expect(sent.emitted).toBe(2000)

    // First start: slow handlers, so ~100 claims are in flight when it is killed. What it processed
    // is read from a file its handler appends to before returning: its stdout lines (`got <i>`) can
    // be lost with the SIGKILL after the box already holds their acknowledgements.
    const processed = `${box}.processed`
    const firstGot = () => (fs.existsSync(processed) ? fs.readFileSync(processed, 'utf8').split('\n').filter(Boolean).map(Number) : [])
    const first = inContainer('receive', ours(box), { n: 2000, delayMs: 5, progressFile: processed, timeoutMs: 60000 })
    await until(() => firstGot().length >= 300, 30000, 'the first receiver to process 300 messages')
    process.kill(first.pid1(), 'SIGKILL')
    await first.exited
    expect(claimLines(box).length).toBeGreaterThan(0) // it died holding claims

    // Restarted the same way: pid 1 again, same host name.
    const second = inContainer('receive', ours(box), { n: 2000, idleMs: 2000, timeoutMs: 60000 })
    const r2 = await second.result()

    // An ordinary receiver on the host, where pid 1 is some other live process.
    const r3 = await peer('receive', ours(box), { n: 2000, idleMs: 2000 })

    const all = new Set([...firstGot(), ...r2.ids, ...r3.ids])
    const missing = range(0, 2000).filter(i => !all.has(i))
    if (missing.length) {
      // What the next look needs: where the missing messages are now, and what each process said.
      const read = f => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '(none)')
      const lineOf = i => read(box).split('\n').find(l => l.includes(`{"i":${i}}`))
      const where = missing.slice(0, 5).map(i => `${i}: ${lineOf(i) || (read(`${box}.dead`).includes(`{"i":${i}}`) ? 'in the dead-letter box' : 'not in the box')}`)
      throw new Error(
        `${missing.length} message(s) missing: ${missing.join(' ')}\n${where.join('\n')}\n` +
          `first (pid 1):\n${first.out.slice(-2000)}\n${first.err.slice(-3000)}\nrestarted (pid 1):\n${second.out.slice(-1000)}\n${second.err.slice(-4000)}\nhost receiver:\n${r3.output.slice(-4000)}`
      )
    }
    expect(claimLines(box)).toEqual([])
    expect(messageLines(box)).toEqual([])
  }, 120000)

  test("a lock left by a crashed predecessor with this process's pid does not block the box", async () => {
    const box = path.join(tmpDir('lock-own-pid'), 'box')
    fs.writeFileSync(box, '\n')
    // What a pid-1 process killed while writing leaves behind (a token nobody holds).
    fs.writeFileSync(`${box}.lock`, `cds-native-messaging ${os.hostname()} 1 00000000deadbeef`)
    const run = inContainer('emit', ours(box, { lockTimeout: 3000 }), { n: 20 })
    expect((await run.result()).emitted).toBe(20)
    expect(messageLines(box)).toHaveLength(20)
    expect(run.out + run.err).toMatch(/removed stale box lock/)
  }, 30000)

  test('an empty lock left by a writer killed between creating and writing it blocks the box for a second, not for staleLockAfter', async () => {
    const box = path.join(tmpDir('lock-empty'), 'box')
    fs.writeFileSync(box, '\n')
    // What the SIGKILLed pid-1 receiver of the container test left behind now and then.
    fs.writeFileSync(`${box}.lock`, '')
    const t0 = Date.now()
    const sent = await peer('emit', ours(box, { lockTimeout: 4000, staleLockAfter: 60000 }), { n: 5 })
    expect(sent.emitted).toBe(5)
    expect(messageLines(box)).toHaveLength(5)
    expect(sent.output).toMatch(/removed stale box lock/)
    expect(Date.now() - t0).toBeLessThan(30000)
  }, 40000)

  test('a lock of ours held by an unrelated live pid on this host is removed once older than staleLockAfter', async () => {
    const box = path.join(tmpDir('lock-live-pid'), 'box')
    fs.writeFileSync(box, '\n')
    // Pid 1 on the host runs, but is not the (container's) process that took the lock.
    fs.writeFileSync(`${box}.lock`, `cds-native-messaging ${os.hostname()} 1 00000000deadbeef`)
    const sent = await peer('emit', ours(box, { lockTimeout: 4000, staleLockAfter: 1000 }), { n: 5 })
    expect(sent.emitted).toBe(5)
    // With its start time recorded, a lock of another start of pid 1 is stale at once.
    fs.writeFileSync(`${box}.lock`, `cds-native-messaging ${os.hostname()} 1 00000000deadbeef 1`)
    const again = await peer('emit', ours(box, { lockTimeout: 1000, staleLockAfter: 60000 }), { n: 5 })
    expect(again.emitted).toBe(5)
    expect(messageLines(box)).toHaveLength(10)
  }, 30000)
})

/** CPU time (user + system, in ms) of process `pid` so far. */
function cpuMs(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim())
  return ((Number(f[11]) + Number(f[12])) * 1000) / ticks
}

/** box-peer's receiver as a child process; `output()` is its stdout and stderr so far. */
function receiver(box, args) {
  const child = spawn(process.execPath, [path.join(app, 'peer.js'), 'receive', JSON.stringify(args)], {
    cwd: app,
    env: { ...process.env, CDS_CONFIG: JSON.stringify({ requires: { messaging: ours(box) } }), NODE_ENV: 'test' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  child.stdout.on('data', d => (out += d))
  child.stderr.on('data', d => (out += d))
  return { child, output: () => out, exited: new Promise(resolve => child.on('exit', resolve)) }
}

describe('file box: bytes that are not UTF-8 (issue #14, defect 6)', () => {
  test('the line goes to .malformed with a warning, the others are delivered, and the consumer does not spin', async () => {
    const box = path.join(tmpDir('not-utf8'), 'box')
    const lines = range(0, 5).map(i => Buffer.from(`\nreviewed {"data":{"i":${i}},"headers":{}}`))
    fs.writeFileSync(box, Buffer.concat([lines[0], lines[1], Buffer.from('\nreviewed {"data":"\xff\xfe"}', 'latin1'), ...lines.slice(2)]))
    const { child, output, exited } = receiver(box, { n: 6, idleMs: 1500, progress: true })
    await until(() => (output().match(/^got \d+$/gm) || []).length >= 5, 20000, 'the five valid messages')
    // Measure while the consumer keeps running (idle, watching the box).
    const before = cpuMs(child.pid)
    await new Promise(r => setTimeout(r, 3000))
    const used = cpuMs(child.pid) - before
    await exited
    expect(used).toBeLessThan(600) // < 20 % of one core over 3 s; it spun at ~110 % before
    expect(fs.readFileSync(`${box}.malformed`)).toEqual(Buffer.from('\nreviewed {"data":"\xff\xfe"}', 'latin1'))
    expect(output()).toMatch(/moved a line that is not UTF-8 text/)
    expect(messageLines(box)).toEqual([])
  }, 40000)

  test('a box that cannot be read at all: the failing cycle backs off instead of spinning', async () => {
    const dir = tmpDir('unreadable')
    const box = path.join(dir, 'box')
    const { child, output, exited } = receiver(box, { n: 1, idleMs: 2000 })
    await until(() => fs.existsSync(box), 10000, 'the box')
    await new Promise(r => setTimeout(r, 1000)) // started and idle
    // Replace the box by a directory: every read fails from now on.
    // (The consumer recreates a missing box: retry until the directory wins the race.)
    await until(() => {
      fs.rmSync(box, { force: true })
      try {
        fs.mkdirSync(box)
        return true
      } catch {
        return false
      }
    }, 5000, 'the box replaced by a directory')
    fs.appendFileSync(path.join(dir, 'poke'), 'x') // a change in the watched directory
    const before = cpuMs(child.pid)
    await new Promise(r => setTimeout(r, 3000))
    const used = cpuMs(child.pid) - before
    child.kill('SIGKILL')
    await exited
    expect(used).toBeLessThan(600)
    expect(output()).toMatch(/cannot read box/)
  }, 30000)
})
