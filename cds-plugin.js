'use strict'
// cds-native-messaging as a CAP plugin. The kinds themselves are declared in package.json
// (`cds.requires.kinds`), which CAP merges into cds.env for every plugin it loads; this file only
// has to exist so that CAP discovers the package as a plugin. It is loaded by the app's @sap/cds,
// which lib/cds.js hands to every service of this package.
const { cds, checkSingleCds } = require('./lib/cds')
cds.log('native-messaging')._debug && cds.log('native-messaging').debug('cds-native-messaging plugin loaded')
checkSingleCds()
