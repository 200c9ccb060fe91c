import neostandard from 'neostandard'

// The Fastify ecosystem's style (standard, for TypeScript too), as @fastify plugins use it.
export default [
  ...neostandard({
    ts: true,
    ignores: ['node_modules/**', '.tap/**', '.stryker-tmp/**', 'reports/**', 'data/**', 'drizzle/**', 'coverage/**']
  }),
  {
    rules: {
      // `void promise` marks a promise deliberately not awaited (a timer's work, a background
      // flush); as an expression, void stays refused.
      'no-void': ['error', { allowAsStatement: true }]
    }
  }
]
