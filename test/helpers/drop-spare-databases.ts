import { dropSpareDatabases, SPARE_PREFIX } from './recycled-databases.ts'

/**
 * tap's `after` script: when a run ends, drops the spare test databases its tests parked on the
 * `TEST_DATABASE_URL` server (see recycled-databases.ts). The migrated template stays, as before.
 * A run that was interrupted leaves spares that the next run reuses or drops.
 */
const serverUrl = process.env.TEST_DATABASE_URL
if (serverUrl !== undefined && serverUrl !== '') await dropSpareDatabases(serverUrl, SPARE_PREFIX)
