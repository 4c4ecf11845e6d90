'use strict'
// What the benchmark compares, per transport: the messaging config of our kind (`ours`), of
// @sap/cds's own kind for the same backend (`cds`) and, where one exists, a raw JS client (`raw`,
// implemented in bench/raw/<driver>.js). `cdsN` caps the message count of @sap/cds's kind where it
// is too slow for the full count; `procs` restricts the process layouts that make sense.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

module.exports = {
  local: {
    label: { ours: 'native-local-messaging', cds: '@sap/cds local-messaging' },
    procs: [1], // in-process by definition
    ours: () => ({ kind: 'native-local-messaging' }),
    cds: () => ({ kind: 'local-messaging' }),
    notes: ['local: no raw client exists for an in-process queue; only one-process layouts apply.']
  },
  file: {
    label: { ours: 'native-file-based-messaging', cds: '@sap/cds file-based-messaging' },
    prepare: () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cds-native-bench-'))
      return { dir, file: path.join(dir, 'box') }
    },
    cleanup: ({ dir }) => fs.rmSync(dir, { recursive: true, force: true }),
    ours: ({ file }) => ({ kind: 'native-file-based-messaging', file }),
    cds: ({ file }) => ({ kind: 'file-based-messaging', file, outboxed: false }),
    // @sap/cds's file box waits 150 ms for its lock per contended emit: a few hundred messages take minutes.
    cdsN: ({ n, inflight }) => Math.min(n, inflight > 1 ? 200 : 40),
    notes: [
      'file: no raw JS client exists for the box format; @sap/cds file-based-messaging is measured with fewer messages (it manages a few msgs/s), rates are per second all the same.',
      'file: @sap/cds file-based-messaging is run with outboxed: false, so its emits are measured, not its in-memory outbox.'
    ]
  }
}
