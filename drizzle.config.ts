import { defineConfig } from 'drizzle-kit'

// Generates SQL migrations into drizzle/ from the schema (npm run db:generate). They are
// reviewed, committed, and applied by the service at start (src/db/migrate.ts).
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/schema.ts',
  out: './drizzle',
  strict: true
})
