'use strict'
// native-amqp-messaging with default configuration in two apps (issue #14, defect 3): without
// VCAP metadata every app consumed from `CAP.0000`, so two apps split each other's messages.
const fs = require('node:fs')
const path = require('node:path')
const { tmpDir } = require('./helpers')
const { URL, RUN, ensureRabbit, deleteQueues, spawnPeer, range } = require('./amqp-helpers')

const queues = []
/** A CAP app directory whose package.json is named `name` (its default queue derives from it). */
function appDir(name) {
  const dir = tmpDir(name)
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, private: true, dependencies: { 'cds-native-messaging': '*' } }))
  queues.push(`${name}.0000`)
  return dir
}

beforeAll(ensureRabbit, 150000)
afterAll(() => deleteQueues(queues))

test('two apps with the default queue each receive all 10 of 10', async () => {
  const topic = `${RUN}.defaults`
  const config = { kind: 'native-amqp-messaging', url: URL, sendTimeout: 30000 }
  const [a, b] = [appDir(`rel-app-a-${RUN}`), appDir(`rel-app-b-${RUN}`)]
  const ra = spawnPeer('receive', config, { n: 10, topic, idleMs: 1500 }, { cwd: a })
  const rb = spawnPeer('receive', config, { n: 10, topic, idleMs: 1500 }, { cwd: b })
  await Promise.all([ra.ready, rb.ready])
  const sent = await spawnPeer('emit', config, { n: 10, topic }).done
  expect(sent).toMatchObject({ emitted: 10, failed: 0 })
  const [ga, gb] = await Promise.all([ra.done, rb.done])
  expect(ga.ids).toEqual(range(0, 10))
  expect(gb.ids).toEqual(range(0, 10))
}, 60000)
