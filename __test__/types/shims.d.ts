// Modules that @cap-js/cds-types refers to but this package does not install (the cds-dk and
// the chai typings of cds.test); declared minimally so that every .d.ts, ours included, is checked.
declare module '@sap/cds-dk'
declare module 'chai' {
  export const assert: unknown
  export const expect: unknown
  export const should: unknown
}
