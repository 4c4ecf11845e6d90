'use strict'
// Loads the native addon: the napi-generated loader (local build in ./native, or the
// per-platform package from npm/) with an actionable error if neither is there.
const { NativeMessagingError, codes } = require('./errors')

let binding
function native() {
  if (binding) return binding
  try {
    binding = require('../native/native.js')
  } catch (e) {
    throw new NativeMessagingError(
      codes.INTERNAL,
      `cds-native-messaging: the native addon for ${process.platform}-${process.arch} could not be loaded ` +
        `(${e.message}). Reinstall the package; in a clone of the repository run \`npm install\` to build it.`,
      { cause: e }
    )
  }
  return binding
}

module.exports = { native }
