'use strict'
// index.d.ts declares what index.js exports at runtime (tsc checks the declarations themselves:
// scripts/test.sh runs `tsc -p __test__/types` on a consumer that uses every exported type).
const fs = require('node:fs')
const path = require('node:path')

test('every runtime export of index.js is declared in index.d.ts', () => {
  const dts = fs.readFileSync(path.join(__dirname, '..', '..', 'index.d.ts'), 'utf8')
  const declared = new Set([...dts.matchAll(/^export declare (?:class|const|function) (\w+)/gm)].map(m => m[1]))
  const exported = Object.keys(require('../../index'))
  expect(exported.length).toBeGreaterThan(5)
  expect(exported.filter(name => !declared.has(name))).toEqual([])
  expect([...declared].filter(name => !exported.includes(name))).toEqual([])
})
