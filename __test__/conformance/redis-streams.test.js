'use strict'
// The conformance scenarios (scenarios.js) against the redis-streams kind (kinds.js); one file per kind so
// scripts/jest-each.js runs each in a process of its own.
require('./scenarios').conformance('redis-streams')
