'use strict'
// Loads the native addon: the napi-generated loader native/native.js, which takes a local build in
// ./native (a clone), else the platform package (cds-native-messaging-<platform>, an optional
// dependency), else the file NAPI_RS_NATIVE_LIBRARY_PATH names. Without any: one paragraph saying
// which platform this is, which are supported and how to build from source.
const { NativeMessagingError, codes } = require('./errors')
const pkg = require('../package.json')

/** The napi platform name of this process, e.g. `linux-x64-gnu`, `darwin-arm64`. */
function platformName() {
  let name = `${process.platform}-${process.arch}`
  if (process.platform === 'linux') {
    const glibc = process.report?.getReport?.().header?.glibcVersionRuntime
    name += glibc ? '-gnu' : '-musl'
  }
  return name
}

/** The platforms with a prebuilt addon: the optional dependencies `cds-native-messaging-<platform>`. */
function supportedPlatforms() {
  const prefix = `${pkg.name}-`
  return Object.keys(pkg.optionalDependencies || {})
    .filter(d => d.startsWith(prefix))
    .map(d => d.slice(prefix.length))
}

/** The one-paragraph error for a process without a loadable addon. */
function loadError(cause) {
  const platform = platformName()
  const supported = supportedPlatforms()
  const first = String(cause?.cause?.message || cause?.message || cause).split('\n')[0]
  const why = supported.includes(platform)
    ? `its package ${pkg.name}-${platform} is not installed or does not load (${first}); install it with \`npm install ${pkg.name}-${platform}@${pkg.version}\` (npm skips optional dependencies with --omit=optional or a lock file made on another platform)`
    : `there is no prebuilt addon for ${platform}`
  return new NativeMessagingError(
    codes.INTERNAL,
    `cds-native-messaging cannot load its native addon on ${platform}: ${why}. Prebuilt addons exist for ${supported.join(', ') || 'no platform'} ` +
      '(Linux x64 with glibc 2.17 or newer). To build it from source: install Rust 1.88 or newer and a C compiler, clone the ' +
      'repository, run `npm install` in the clone (it builds native/cds-native-messaging.<platform>.node), and start your app with ' +
      'NAPI_RS_NATIVE_LIBRARY_PATH set to that file.',
    { cause }
  )
}

let binding
function native() {
  if (binding) return binding
  try {
    binding = require('../native/native.js')
  } catch (e) {
    throw loadError(e)
  }
  return binding
}

module.exports = { native, platformName, supportedPlatforms }
