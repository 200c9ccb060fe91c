import postgres from 'postgres'
import { SPARE_PREFIX } from './recycled-databases.ts'

/**
 * tap's `after` script: when a run ends, drops the spare test databases its tests parked on the
 * `TEST_DATABASE_URL` server (see recycled-databases.ts). The migrated template stays, as before.
 * A run that was interrupted leaves spares that the next run reuses or drops.
 */
const serverUrl = process.env.TEST_DATABASE_URL
if (serverUrl !== undefined && serverUrl !== '') {
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} })
  try {
    const spares = await admin<Array<{ datname: string }>>`select datname from pg_database where starts_with(datname, ${SPARE_PREFIX})`
    for (const { datname } of spares) {
      if (/^[a-z0-9_]+$/.test(datname)) await admin.unsafe(`drop database if exists ${datname} with (force)`).catch(() => {})
    }
  } finally {
    await admin.end()
  }
}
