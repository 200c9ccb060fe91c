// Mutation testing of the security-critical modules (issue 16; results in docs/security.md).
// `npm run mutate` runs test/mutation/mutate.ts, which runs Stryker once per module below with
// STRYKER_MODULE set; `npm run mutate -- pkce ssrf` runs only those. One module by hand:
//   STRYKER_MODULE=pkce npx stryker run
//
// The command runner runs, for each mutant, only the focused tests of the mutated module, each
// file with plain `node` (Node strips the types; the instrumenter's output is TypeScript Node can
// run, and `disableTypeChecks` keeps it from needing the compiler), on the embedded database,
// and stops at the first failing file.

/** name → the files (or `file:line-line` ranges) mutated, and the test files that must kill them. */
export const modules = {
  pkce: {
    mutate: ['src/oauth/pkce.ts'],
    tests: ['test/unit/pkce.test.ts']
  },
  'redirect-uri': {
    mutate: ['src/oauth/redirect-uri.ts'],
    tests: ['test/unit/redirect-uri.test.ts']
  },
  secrets: {
    mutate: ['src/lib/secrets.ts'],
    tests: ['test/unit/secrets.test.ts']
  },
  grants: {
    // redeemCode, refreshTokens, and the token-pair, issueTokens and revokeGrant helpers they call.
    // Line ranges: update them when grants.ts moves. Run it with TEST_DATABASE_URL set: a refresh
    // that loses a race to a concurrent one (its statement read the token unspent, its UPDATE
    // found it spent) can only happen on PostgreSQL; the embedded database runs statements one at a time.
    mutate: ['src/oauth/grants.ts:79-111', 'src/oauth/grants.ts:130-170', 'src/oauth/grants.ts:204-255'],
    tests: ['test/integration/grants.test.ts']
  },
  'client-auth': {
    mutate: ['src/oauth/client-auth.ts'],
    tests: ['test/unit/client-auth.test.ts']
  },
  bearer: {
    mutate: ['src/auth/bearer.ts', 'src/auth/challenge.ts'],
    tests: ['test/unit/bearer.test.ts', 'test/unit/challenge.test.ts']
  },
  ssrf: {
    mutate: ['src/oauth/ssrf-guard.ts'],
    tests: ['test/unit/ssrf-guard-rules.test.ts', 'test/unit/ssrf-guard.test.ts']
  },
  consent: {
    // The consent form's CSRF cookie and Sec-Fetch-Site checks (authorize.ts), and the framing headers (consent-page.ts).
    // Line ranges: the secure-cookie flag, setting the cookie, the Sec-Fetch-Site and cookie checks, clearing and
    // renewing it, setCsrfCookie and csrfCookieName; setPageHeaders. Update them when authorize.ts moves.
    mutate: ['src/oauth/authorize.ts:57-57', 'src/oauth/authorize.ts:96-96', 'src/oauth/authorize.ts:211-217', 'src/oauth/authorize.ts:223-223',
      'src/oauth/authorize.ts:239-239', 'src/oauth/authorize.ts:265-267', 'src/oauth/authorize.ts:297-299', 'src/oauth/consent-page.ts:39-49'],
    tests: ['test/integration/consent-checks.test.ts']
  },
  // The external-token verifier (issue 11): what a JWT must be, claims to identity, key sets, introspection, and routing.
  'idp-tokens': {
    mutate: ['src/idp/jwt.ts', 'src/idp/claims.ts'],
    tests: ['test/unit/idp-claims.test.ts', 'test/unit/idp-jwt.test.ts']
  },
  'idp-keys': {
    mutate: ['src/idp/keys.ts', 'src/idp/fetch.ts'],
    tests: ['test/unit/idp-fetch.test.ts', 'test/unit/idp-keys.test.ts']
  },
  'idp-introspection': {
    mutate: ['src/idp/introspection.ts'],
    tests: ['test/unit/idp-introspection.test.ts']
  },
  'idp-verifier': {
    // The focused test drives ExternalVerifier directly (test/integration/external-idp.test.ts, end to end, takes longer).
    mutate: ['src/idp/verifier.ts'],
    tests: ['test/integration/external-verifier.test.ts']
  }
}

const name = process.env.STRYKER_MODULE ?? 'pkce'
const selected = modules[name]
if (selected === undefined) throw new Error(`STRYKER_MODULE=${name} is not one of ${Object.keys(modules).join(', ')}`)

export default {
  testRunner: 'command',
  // TAP_TIMEOUT=0: a test file run by plain node otherwise stops at tap's 30 s default (Stryker keeps its own timeout).
  // TAP_BAIL=1: a killed mutant ends at its first failing assertion.
  commandRunner: { command: selected.tests.map((file) => `TAP_BAIL=1 TAP_TIMEOUT=0 node ${file}`).join(' && ') },
  coverageAnalysis: 'off',
  mutate: selected.mutate,
  // A 2-core machine: two mutants at a time.
  concurrency: 2,
  timeoutMS: 20000,
  timeoutFactor: 2,
  disableTypeChecks: true,
  checkers: [],
  reporters: ['clear-text', 'progress-append-only', 'json'],
  jsonReporter: { fileName: `reports/mutation/${name}.json` },
  clearTextReporter: { allowColor: false, logTests: false, maxTestsToLog: 0 },
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
  ignorePatterns: ['reports', 'bench', 'docs', 'data', '.tap', 'coverage', 'dist', '.ci', 'drizzle.config.ts'],
  thresholds: { high: 95, low: 90, break: null }
}
