import neostandard from 'neostandard'

// The Fastify ecosystem's style (standard, for TypeScript too), as @fastify plugins use it.
export default neostandard({
  ts: true,
  ignores: ['node_modules/**', '.tap/**', '.stryker-tmp/**', 'reports/**', 'data/**', 'drizzle/**', 'coverage/**']
})
