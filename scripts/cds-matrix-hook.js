'use strict'
// Preloaded (NODE_OPTIONS=--require) for the compatibility run: resolves @sap/cds and
// @cap-js/cds-test from CDS_MATRIX_MODULES (e.g. .matrix/cds10/node_modules) instead of the
// repository's node_modules, in this process and in every child process it starts; @sap/cds-mtxs
// and @cap-js/sqlite too when that directory has them (their versions follow @sap/cds's major).
// Also preloaded by the multitenancy suite's app (CDS_COMPANION_MODULES, below).
const Module = require('node:module')
const base = process.env.CDS_MATRIX_MODULES
// CDS_COMPANION_MODULES: where @sap/cds-mtxs and @cap-js/sqlite come from without a matrix (the
// multitenancy suite's .matrix/mt9; they are not dependencies of the repository, whose in-process
// CAP apps would otherwise load a SQLite built for another Node).
const companionBase = process.env.CDS_COMPANION_MODULES || base
if (base || companionBase) {
  const resolve = Module._resolveFilename
  const redirected = /^(@sap\/cds|@cap-js\/cds-test)(\/|$)/
  const companions = /^(@sap\/cds-mtxs|@cap-js\/sqlite)(\/|$)/
  Module._resolveFilename = function (request, parent, isMain, options) {
    if (base && redirected.test(request)) return resolve.call(this, request, parent, isMain, { paths: [base] })
    if (companionBase && companions.test(request)) {
      try {
        return resolve.call(this, request, parent, isMain, { paths: [companionBase] })
      } catch {
        // not installed there: the repository's
      }
    }
    return resolve.call(this, request, parent, isMain, options)
  }
}
