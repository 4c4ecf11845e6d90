'use strict'
// Preloaded (NODE_OPTIONS=--require) for the compatibility run: resolves @sap/cds and
// @cap-js/cds-test from CDS_MATRIX_MODULES (e.g. .matrix/cds10/node_modules) instead of the
// repository's node_modules, in this process and in every child process it starts.
const Module = require('node:module')
const base = process.env.CDS_MATRIX_MODULES
if (base) {
  const resolve = Module._resolveFilename
  const redirected = /^(@sap\/cds|@cap-js\/cds-test)(\/|$)/
  Module._resolveFilename = function (request, parent, isMain, options) {
    if (redirected.test(request)) return resolve.call(this, request, parent, isMain, { paths: [base] })
    return resolve.call(this, request, parent, isMain, options)
  }
}
