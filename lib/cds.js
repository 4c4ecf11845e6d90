'use strict'
// The application's @sap/cds instance, for every module of this package.
//
// A package installed as a symlink (`npm link`, `"file:../pkg"`, a path in a monorepo) resolves
// `require('@sap/cds')` from its own location: in a clone with its own node_modules that is a
// second copy of @sap/cds, whose `cds.once('listening')` never fires and whose MessagingService is
// not the app's — emits work, consumption never starts. The app's @sap/cds registers itself as
// `global.cds` when it is loaded (and it loads this package's plugin and kinds), so that one is
// used; `require('@sap/cds')` only when this package is loaded without a CAP app. (`global.cds` is
// the instance loaded last: when that is not the one the app root resolves, the app's wins.)
function appCds() {
  const last = global.cds
  if (!last) return require('@sap/cds')
  try {
    const main = require.resolve('@sap/cds', { paths: [last.root ?? process.cwd()] })
    return require.cache[main]?.exports ?? last
  } catch {
    return last
  }
}
const cds = appCds()

let warned = false

/** The homes (directories) of every @sap/cds instance loaded in this process. */
function loadedHomes() {
  const homes = new Set()
  const add = home => typeof home === 'string' && homes.add(home.toLowerCase())
  add(cds.home)
  add(global.cds?.home)
  for (const home of global.__cds_loaded_from ?? []) add(home) // @sap/cds records where it was loaded from
  return [...homes]
}

/**
 * Warns once when more than one @sap/cds instance is loaded: services of one instance do not see
 * the events (`listening`, `shutdown`, `subscribe`) of the other.
 */
function checkSingleCds(log = cds.log('native-messaging')) {
  if (warned) return
  const homes = loadedHomes()
  if (homes.length < 2) return
  warned = true
  log.warn(
    `two instances of @sap/cds are loaded (${homes.join(', ')}); cds-native-messaging uses the one at ${cds.home}. ` +
      'Services of one instance miss the events of the other (a consumer that never starts). This happens when a package ' +
      'is installed as a symlink (npm link, "file:../pkg", a monorepo path) and has its own node_modules/@sap/cds: install ' +
      'cds-native-messaging into the app from the registry or a tarball (`npm i cds-native-messaging -w <app>` in a monorepo), ' +
      'or remove the second @sap/cds (`npm dedupe`).'
  )
}

module.exports = { cds, checkSingleCds }
