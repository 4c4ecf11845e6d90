'use strict'
// Output of the CLI: plain text for people, one JSON value (or one per line) with --json, and a
// progress line (count, rate) on a terminal only.
const { native } = require('../native')
const { NativeMessagingError, codes } = require('../errors')

/** Writes one line to stdout. */
function line(text = '') {
  process.stdout.write(text + '\n')
}

/** Writes `value` as one JSON line. */
function json(value) {
  process.stdout.write(JSON.stringify(value) + '\n')
}

/**
 * A progress line on stderr, redrawn at most every 200 ms, only when stderr is a terminal.
 * @param {string} what e.g. 'redelivered'
 */
function progress(what, stream = process.stderr) {
  const tty = !!stream.isTTY
  const start = Date.now()
  let n = 0
  let drawn = 0
  const draw = () => {
    const s = (Date.now() - start) / 1000
    stream.write(`\r${what} ${n}${s > 0.5 ? ` (${Math.round(n / s)}/s)` : ''}   `)
  }
  return {
    add(k = 1) {
      n += k
      if (tty && Date.now() - drawn > 200) {
        drawn = Date.now()
        draw()
      }
    },
    done() {
      if (tty && drawn) {
        draw()
        stream.write('\n')
      }
      return n
    }
  }
}

/** A matcher for topic patterns with CAP's glob meaning (`*`, `**`, `?`), compiled natively; no patterns match all. */
function topicMatcher(patterns) {
  if (!patterns || !patterns.length) return () => true
  const router = new (native().NativeRouter)([{ service: 'x', patterns }], 'drop')
  return topic => router.route(topic).length > 0
}

/** Parses `--older-than` (`30s`, `10m`, `2h`, `7d`, or ms) into milliseconds. */
function duration(text) {
  if (text == null) return undefined
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(String(text).trim())
  if (!m) throw new NativeMessagingError(codes.INVALID_CONFIG, `not a duration: ${text} (use e.g. 30s, 10m, 2h, 7d)`)
  const unit = { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 }[m[2] || 'ms']
  return Number(m[1]) * unit
}

/** Pretty JSON text of a payload string (as is when it is not JSON). */
function pretty(payload) {
  try {
    return JSON.stringify(JSON.parse(payload))
  } catch {
    return payload
  }
}

module.exports = { line, json, progress, topicMatcher, duration, pretty }
