'use strict'
// With CDS_MATRIX_MODULES set (scripts/test.sh's compatibility run), @sap/cds and @cap-js/cds-test
// come from that directory, e.g. @sap/cds 10 in .matrix/cds10/node_modules.
const base = process.env.CDS_MATRIX_MODULES
module.exports = {
  testMatch: ['<rootDir>/__test__/**/*.test.js'],
  testEnvironment: 'node',
  testTimeout: 60000,
  moduleNameMapper: base
    ? {
        '^@sap/cds$': `${base}/@sap/cds`,
        '^@sap/cds/(.*)$': `${base}/@sap/cds/$1`,
        '^@cap-js/cds-test$': `${base}/@cap-js/cds-test`,
        '^@cap-js/cds-test/(.*)$': `${base}/@cap-js/cds-test/$1`
      }
    : {}
}
