#!/usr/bin/env node
'use strict'
// cds-native-messaging: inspect and operate the native messaging services of the CAP app in the
// current folder (doctor, tail, send, dead-letters). Run `npx cds-native-messaging --help`.
const { Command, Option } = require('commander')

// `… | head`: a closed pipe ends the command quietly.
process.stdout.on('error', e => (e.code === 'EPIPE' ? process.exit(0) : undefined))

const program = new Command('cds-native-messaging')
const collect = (v, all) => [...(all || []), v]

program
  .description("Inspect and operate the native messaging services of the CAP app in this folder (reads the app's cds.env)")
  .option('-p, --profile <profiles>', 'cds profile(s), as CDS_ENV')
  .option('--json', 'machine-readable output')
  .showHelpAfterError()

const run = fn => async (...args) => {
  const cmd = args[args.length - 1]
  const opts = { ...program.opts(), ...cmd.opts() }
  try {
    process.exitCode = (await fn(...args.slice(0, -2), opts)) ?? 0
  } catch (e) {
    const code = e && e.code ? `${e.code}: ` : ''
    if (opts.json) process.stdout.write(JSON.stringify({ error: { code: e?.code, message: e?.message } }) + '\n')
    process.stderr.write(`cds-native-messaging: ${code}${e?.message ?? e}\n`)
    process.exitCode = 1
  }
  // Native handles (connections, watchers) must not keep the CLI alive.
  setImmediate(() => process.exit())
}

program
  .command('doctor [service]')
  .description('check every messaging service: configuration, credentials, broker, queue, contract; exit code 1 when something is wrong')
  .option('-t, --topic <topic>', 'Redis streams: a topic whose stream and consumer group must exist (repeatable)', collect)
  .action(run((service, opts) => require('../lib/cli/doctor').doctor(service, opts)))

program
  .command('tail [patterns...]')
  .description('print messages as they flow, without taking them from the app (patterns: CAP globs, * and **)')
  .option('-s, --service <name>', 'the messaging service (default: the only one, or messaging)')
  .option('-n, --count <n>', 'stop after n messages')
  .option('--timeout <ms>', 'stop after ms')
  .action(run((patterns, opts) => require('../lib/cli/tail').tail(patterns || [], opts)))

program
  .command('send <topic> [json]')
  .description('emit one message through the configured service')
  .option('-s, --service <name>', 'the messaging service (default: the only one, or messaging)')
  .option('-H, --header <k=v>', 'a header (repeatable)', collect)
  .action(run((topic, json, opts) => require('../lib/cli/send').send(topic, json, opts)))

const dl = program.command('dead-letters').description("list, show, redeliver or purge the service's dead letters")
const filters = c =>
  c
    .option('-s, --service <name>', 'the messaging service (default: the only one, or messaging)')
    .option('-t, --topic <pattern>', 'only dead letters whose topic matches (repeatable)', collect)
    .addOption(new Option('--older-than <age>', 'only dead letters older than age (30s, 10m, 2h, 7d)'))
dl_cmd('list', 'list dead letters', (opts) => require('../lib/cli/dead-letters').list(opts))
filters(dl.command('show <id>').description('show one dead letter with its headers')).action(
  run((id, opts) => require('../lib/cli/dead-letters').show(id, opts))
)
filters(dl.command('redeliver [ids...]').description('put dead letters back, headers and all, and report counts')).action(
  run((ids, opts) => require('../lib/cli/dead-letters').redeliver(ids || [], opts))
)
filters(dl.command('purge [ids...]').description('remove dead letters for good').option('--all', 'all of them')).action(
  run((ids, opts) => require('../lib/cli/dead-letters').purge(ids || [], opts))
)

function dl_cmd(name, description, fn) {
  filters(dl.command(name).description(description)).action(run(opts => fn(opts)))
}

program.parseAsync(process.argv)
